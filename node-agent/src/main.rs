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
    /// The image's node process, started by PID 1.
    #[command(hide = true)]
    Boot,
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
        /// Send from inside this network namespace (a pod's, such as the
        /// image's probe pod at /run/netns/probe).
        #[arg(long)]
        netns: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    if pid1::is_pid1() {
        pid1::run();
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config, debug } => run(&config, debug),
        Cmd::Check { config, ignition } => {
            // Whatever is wrong with the checked file is bad input: status 2.
            return match check(&config, ignition.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error(&format!("{e:#}"));
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Pod(args) => pod(&args),
        Cmd::Probe { cmd: ProbeCmd::Serve { listen } } => probe::serve(listen),
        Cmd::Probe { cmd: ProbeCmd::Send { to, tries, netns } } => probe_send(to, tries, netns),
        Cmd::Boot => boot(),
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

fn run(config: &std::path::Path, debug: bool) -> Result<()> {
    node::exit_on_panic();
    log::set_debug(debug);
    let cfg = NodeConfig::load(config)?;
    log::info(&format!("config from file {}", config.display()));
    node::runtime()?.block_on(node::run(cfg, node::Options::default()))
}

fn check(config: &std::path::Path, ignition: Option<&std::path::Path>) -> Result<()> {
    let (cfg, config) = match ignition {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let root =
                tempfile::Builder::new().prefix("node-agent-check-").tempdir().context("creating a scratch root")?;
            let cfg = node_agent::config::providers::apply_ignition(&bytes, root.path())
                .with_context(|| format!("Ignition config {}", path.display()))?;
            (cfg, path)
        }
        None => (NodeConfig::load(config)?, config),
    };
    // The TLS material must load as `run` will load it.
    node_agent::etcd::Client::new(&cfg.etcd.endpoints, cfg.etcd.tls.as_ref())
        .with_context(|| format!("node config {}", config.display()))?;
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
        extra_args: Vec::new(),
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

fn probe_send(to: SocketAddr, tries: u32, netns: Option<PathBuf>) -> Result<()> {
    let o = match netns {
        Some(ns) => node::probe::in_netns(ns, move || probe::send(to, tries))
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))???,
        None => probe::send(to, tries)?,
    };
    println!("probe {to}: reached; it saw {} (we are {})", o.seen_as, o.ours);
    anyhow::ensure!(o.seen_as == o.ours, "{to} saw us as {}, not {}: the path NATs", o.seen_as, o.ours);
    Ok(())
}

/// The node's work under PID 1: find the config, bring up the node network,
/// run the role; on any error, log it and start over. Never returns.
fn boot() -> Result<()> {
    node::exit_on_panic();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let parsed = node_agent::config::Cmdline::parse(&cmdline);
    log::set_debug(parsed.debug);
    for w in &parsed.warnings {
        log::warn(&format!("kernel command line: {w}"));
    }
    let opts = node::Options { probe: parsed.probe, in_image: true };
    if parsed.config_by_network() {
        // The config comes over the network: get an address first.
        if let Err(e) = node::runtime()?.block_on(pid1::net::dhcp_any()) {
            log::error(&format!("{e:#}"));
        }
    }
    let cfg = loop {
        match find_config(&cmdline) {
            Ok(cfg) => break cfg,
            Err(e) => log::error(&format!("no usable config: {e:#}")),
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    if let Err(e) = nix::unistd::sethostname(&cfg.node.name) {
        log::warn(&format!("setting the hostname: {e}"));
    }
    node::runtime()?.block_on(async {
        if let Some(guest) = &cfg.guest {
            pid1::guest::start(&cfg, guest);
        }
        loop {
            let result = match pid1::net::up(&cfg).await {
                Ok(()) => node::run(cfg.clone(), opts).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                log::error(&format!("{e:#}; retrying"));
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    })
}

fn find_config(cmdline: &str) -> Result<NodeConfig> {
    use node_agent::config::providers;
    let sources = providers::sources(
        cmdline,
        std::path::Path::new(providers::FW_CFG_PATH),
        std::path::Path::new(providers::CONFIG_PATH),
    );
    let mut last = anyhow::anyhow!("no config source: nothing on the command line, in fw_cfg, or embedded");
    for source in &sources {
        match providers::load(source, std::path::Path::new("/")) {
            Ok(cfg) => {
                log::info(&format!("config from {source}"));
                return Ok(cfg);
            }
            Err(e) => {
                log::warn(&format!("config from {source} failed: {e:#}"));
                last = e;
            }
        }
    }
    Err(last)
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
