//! `node-agent`: dispatch only.

use std::process::ExitCode;

use clap::Parser;
use node_agent::cli::{Cli, Cmd, ProbeCmd};
use node_agent::{boot, commands, pid1, probe};

fn main() -> ExitCode {
    if pid1::is_pid1() {
        pid1::run();
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config, debug } => commands::run(&config, debug),
        Cmd::Check { config, ignition } => return commands::check_status(&config, ignition.as_deref()),
        Cmd::Pod(args) => commands::pod(&args),
        Cmd::Probe { cmd: ProbeCmd::Serve { listen } } => probe::serve(listen),
        Cmd::Probe { cmd: ProbeCmd::Send { to, tries, netns } } => commands::probe_send(to, tries, netns),
        Cmd::Boot => boot::run(),
    };
    commands::exit_status(result)
}
