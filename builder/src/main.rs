//! `imgbuild`: dispatch only.

use std::process::ExitCode;

use imgbuild::cmdline::{Cli, Cmd};
use imgbuild::commands;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    commands::set_verbosity(cli.verbosity);
    if !matches!(cli.cmd, Some(Cmd::Serve(_))) {
        commands::end_quietly_on_closed_stdout();
    }
    let result = match cli.cmd {
        Some(Cmd::Init(args)) => commands::init(&args),
        Some(Cmd::Up(args)) => commands::up(args),
        Some(Cmd::Down(args)) => commands::down(&args),
        Some(Cmd::Serve(args)) => commands::serve(&args),
        Some(Cmd::Policy(args)) => commands::policy(&args),
        Some(Cmd::Etcd { cmd }) => commands::etcd(&cmd),
        Some(Cmd::Pki { cmd }) => commands::pki(&cmd),
        Some(Cmd::Completions(args)) => commands::completions(&args),
        Some(Cmd::Man) => commands::man(),
        None => commands::build(cli.build),
    };
    commands::exit_status(result)
}
