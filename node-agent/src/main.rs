//! `node-agent`: dispatch only.

use std::process::ExitCode;

// The agent runs as PID 1 of an image with no libraries: a dynamic build
// is useless there, so refuse to make one (as `cargo install` would
// without the repository's .cargo/config.toml).
#[cfg(not(target_feature = "crt-static"))]
compile_error!(
    "node-agent must be linked statically: build it inside the repository (its .cargo/config.toml sets \
     this), or pass RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu"
);

use clap::Parser;
use node_agent::cli::{Cli, Cmd, ProbeCmd};
use node_agent::{boot, commands, pid1, probe};

fn main() -> ExitCode {
    // Installed in the CNI plugin folder as imgbuild-endpoint.
    if node_agent::policy::plugin::invoked() {
        node_agent::policy::plugin::main();
    }
    // A pod sandbox's pause process is PID 1 of its container: not the image's PID 1.
    if std::env::args_os().nth(1).is_some_and(|a| a == "pause") {
        node_agent::pause::run();
    }
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
        Cmd::Probe { cmd: ProbeCmd::ServePorts { ports } } => probe::serve_ports(&ports),
        Cmd::Probe { cmd: ProbeCmd::Matrix { targets, timeout_ms } } => {
            probe::matrix(&targets, std::time::Duration::from_millis(timeout_ms))
        }
        Cmd::Boot => boot::run(),
        Cmd::Pause => node_agent::pause::run(),
    };
    commands::exit_status(result)
}
