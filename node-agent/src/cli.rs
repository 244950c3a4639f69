//! The command line: what each command takes. `main.rs` dispatches on it;
//! the commands themselves live in `commands` (and `boot` for the image).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "node-agent", version = env!("BUILD_VERSION"), about = "imgbuild's first-boot node agent", help_expected = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the node's role from a config file (as a systemd service).
    Run {
        /// The node config that imgbuild wrote.
        #[arg(long, default_value = node_config::layout::CONFIG_PATH)]
        config: PathBuf,
        /// Log debug lines.
        #[arg(long)]
        debug: bool,
    },
    /// Parse and check a config file, print what it says, and exit.
    Check {
        /// The node config to check.
        #[arg(long, default_value = node_config::layout::CONFIG_PATH)]
        config: PathBuf,
        /// Check an Ignition config instead, as the image's PID 1 reads one
        /// (fw_cfg, URL): applied into a scratch root, then its node config.
        #[arg(long, conflicts_with = "config")]
        ignition: Option<PathBuf>,
    },
    /// Add or delete a pod's network by running the CNI plugins as kubelet does.
    Pod(PodArgs),
    /// The connectivity probe: answer probes, or send one.
    Probe {
        #[command(subcommand)]
        cmd: ProbeCmd,
    },
    /// A pod sandbox's infra process, as Kubernetes' pause: holds the pod's
    /// namespaces, reaps orphans, exits 0 on SIGTERM or SIGINT.
    Pause,
    /// The image's node process, started by PID 1.
    #[command(hide = true)]
    Boot,
}

#[derive(clap::Args)]
pub struct PodArgs {
    /// ADD or DEL.
    #[arg(value_parser = ["add", "del"])]
    pub action: String,
    /// The pod's network namespace (a path like /var/run/netns/NAME).
    #[arg(long)]
    pub netns: PathBuf,
    /// The sandbox (infra container) ID.
    #[arg(long)]
    pub id: String,
    /// The pod's name.
    #[arg(long)]
    pub name: String,
    /// The pod's Kubernetes namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The node config whose CNI paths to use.
    #[arg(long, default_value = node_config::layout::CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Subcommand)]
pub enum ProbeCmd {
    /// Answer UDP probes with the address they came from.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "0.0.0.0:7946")]
        listen: SocketAddr,
    },
    /// Serve TCP and UDP on these ports, answering with the address seen
    /// (as the pods of Kubernetes' network-policy tests do).
    ServePorts {
        /// Comma-separated ports.
        #[arg(long, value_delimiter = ',', required = true)]
        ports: Vec<u16>,
    },
    /// Probe many ADDR:PORT/tcp|udp targets at once; prints `TARGET yes|no`
    /// for each (yes: it answered and saw our own address).
    Matrix {
        /// ADDR:PORT/tcp or ADDR:PORT/udp, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_target)]
        targets: Vec<(SocketAddr, crate::probe::Transport)>,
        /// How long each probe waits, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Probe a peer; fails unless it answers and saw our own address.
    Send {
        /// The peer's probe address.
        #[arg(long)]
        to: SocketAddr,
        /// How many datagrams to try.
        #[arg(long, default_value_t = 20)]
        tries: u32,
        /// Send from inside this network namespace (a pod's, such as the
        /// image's probe pod at /run/netns/probe).
        #[arg(long)]
        netns: Option<PathBuf>,
    },
}

fn parse_target(s: &str) -> Result<(SocketAddr, crate::probe::Transport), String> {
    let (addr, proto) = s.rsplit_once('/').ok_or("expected ADDR:PORT/tcp or ADDR:PORT/udp")?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "tcp" => crate::probe::Transport::Tcp,
        "udp" => crate::probe::Transport::Udp,
        other => return Err(format!("{other:?} is not tcp or udp")),
    };
    Ok((addr.parse().map_err(|e| format!("{addr:?}: {e}"))?, transport))
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
