//! `node-agent`: dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node_agent::config::NodeConfig;
use node_agent::pid1;

#[derive(Parser)]
#[command(name = "node-agent", version, about = "imgbuild's first-boot node agent", help_expected = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node's role from a config file (as a systemd service).
    Run {
        /// The node config that imgbuild wrote.
        #[arg(long, default_value = "/etc/node-agent/config.json")]
        config: PathBuf,
    },
    /// Parse and check a config file, print what it says, and exit.
    Check {
        /// The node config to check.
        #[arg(long, default_value = "/etc/node-agent/config.json")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    if pid1::is_pid1() {
        pid1::run(boot);
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => match NodeConfig::load(&config) {
            Ok(cfg) => {
                println!("node-agent: config from file {}", config.display());
                println!("node-agent: node {} role {}", cfg.node.name, cfg.node.role);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("node-agent: error: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Check { config } => match NodeConfig::load(&config) {
            Ok(cfg) => {
                println!(
                    "node-agent: config {} ok: node {} role {} address {}",
                    config.display(),
                    cfg.node.name,
                    cfg.node.role,
                    cfg.node.address
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("node-agent: error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// The node's work as PID 1: find the config, then run the role.
fn boot() {
    let path = std::path::Path::new("/etc/node-agent/config.json");
    match NodeConfig::load(path) {
        Ok(cfg) => {
            pid1::log(&format!("config from embedded {}", path.display()));
            pid1::log(&format!("node {} role {} address {}", cfg.node.name, cfg.node.role, cfg.node.address));
        }
        Err(e) => pid1::log(&format!("error: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
