//! `node-agent`: dispatch only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use node_agent::cni::exec::{result_ipv4, Runner, Sandbox};
use node_agent::cni::CONFLIST_NAME;
use node_agent::config::NodeConfig;
use node_agent::{log, node, pid1, probe};

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
        /// Log debug lines.
        #[arg(long)]
        debug: bool,
    },
    /// Parse and check a config file, print what it says, and exit.
    Check {
        /// The node config to check.
        #[arg(long, default_value = "/etc/node-agent/config.json")]
        config: PathBuf,
    },
    /// Add or delete a pod's network by running the CNI plugins as kubelet does.
    Pod(PodArgs),
    /// The connectivity probe: answer probes, or send one.
    Probe {
        #[command(subcommand)]
        cmd: ProbeCmd,
    },
}

#[derive(clap::Args)]
struct PodArgs {
    /// ADD or DEL.
    #[arg(value_parser = ["add", "del"])]
    action: String,
    /// The pod's network namespace (a path like /var/run/netns/NAME).
    #[arg(long)]
    netns: PathBuf,
    /// The sandbox (infra container) ID.
    #[arg(long)]
    id: String,
    /// The pod's name.
    #[arg(long)]
    name: String,
    /// The pod's Kubernetes namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The node config whose CNI paths to use.
    #[arg(long, default_value = "/etc/node-agent/config.json")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum ProbeCmd {
    /// Answer UDP probes with the address they came from.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "0.0.0.0:7946")]
        listen: SocketAddr,
    },
    /// Probe a peer; fails unless it answers and saw our own address.
    Send {
        /// The peer's probe address.
        #[arg(long)]
        to: SocketAddr,
        /// How many datagrams to try.
        #[arg(long, default_value_t = 20)]
        tries: u32,
    },
}

fn main() -> ExitCode {
    if pid1::is_pid1() {
        pid1::run(boot);
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config, debug } => run(&config, debug),
        Cmd::Check { config } => check(&config),
        Cmd::Pod(args) => pod(&args),
        Cmd::Probe { cmd: ProbeCmd::Serve { listen } } => probe::serve(listen),
        Cmd::Probe { cmd: ProbeCmd::Send { to, tries } } => probe_send(to, tries),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&format!("{e:#}"));
            if e.chain().any(|c| c.to_string().starts_with("node config ")) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")
}

fn run(config: &std::path::Path, debug: bool) -> Result<()> {
    log::set_debug(debug);
    let cfg = NodeConfig::load(config)?;
    log::info(&format!("config from file {}", config.display()));
    runtime()?.block_on(node::run(cfg))
}

fn check(config: &std::path::Path) -> Result<()> {
    let cfg = NodeConfig::load(config)?;
    println!(
        "node-agent: config {} ok: node {} role {} address {}",
        config.display(),
        cfg.node.name,
        cfg.node.role,
        cfg.node.address
    );
    Ok(())
}

fn pod(args: &PodArgs) -> Result<()> {
    let cfg = NodeConfig::load(&args.config)?;
    let runner = Runner::load(&cfg.paths.cni_conf_dir.join(CONFLIST_NAME), &cfg.paths.cni_bin_dir)?;
    let sb = Sandbox {
        container_id: args.id.clone(),
        netns: args.netns.clone(),
        namespace: args.namespace.clone(),
        name: args.name.clone(),
    };
    if args.action == "add" {
        let result = runner.add(&sb)?;
        let ip = result_ipv4(&result).context("the CNI result has no IPv4 address")?;
        println!("{ip}");
    } else {
        runner.del(&sb)?;
    }
    Ok(())
}

fn probe_send(to: SocketAddr, tries: u32) -> Result<()> {
    let o = probe::send(to, tries)?;
    println!("probe {to}: reached; it saw {} (we are {})", o.seen_as, o.ours);
    anyhow::ensure!(o.seen_as == o.ours, "{to} saw us as {}, not {}: the path NATs", o.seen_as, o.ours);
    Ok(())
}

/// The node's work as PID 1: find the config, then run the role.
fn boot() {
    let path = std::path::Path::new("/etc/node-agent/config.json");
    match NodeConfig::load(path) {
        Ok(cfg) => {
            log::info(&format!("config from embedded {}", path.display()));
            log::info(&format!("node {} role {} address {}", cfg.node.name, cfg.node.role, cfg.node.address));
        }
        Err(e) => log::error(&format!("{e:#}")),
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
