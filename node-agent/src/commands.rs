//! What `node-agent run|check|pod|probe send` do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::PodArgs;
use crate::cni::exec::{result_ipv4, Runner, Sandbox};
use crate::cni::CONFLIST_NAME;
use crate::config::{ConfigError, NodeConfig};
use crate::{log, node, probe, process};

/// Logs a command's error; a node config the user must fix is status 2,
/// anything else 1.
pub fn exit_status(result: Result<()>) -> ExitCode {
    let Err(e) = result else { return ExitCode::SUCCESS };
    log::error(&format!("{e:#}"));
    let invalid = e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some_and(ConfigError::is_invalid));
    if invalid {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// `check`: whatever is wrong with the checked file is bad input, status 2.
pub fn check_status(config: &Path, ignition: Option<&Path>) -> ExitCode {
    match check(config, ignition) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

pub fn run(config: &Path, debug: bool) -> Result<()> {
    process::exit_on_panic();
    log::set_debug(debug);
    let cfg = NodeConfig::load(config)?;
    log::info(&format!("config from file {}", config.display()));
    process::runtime()?.block_on(async {
        let cfg = if cfg.node.net.dhcp { crate::boot::net::held_address(&cfg).await? } else { cfg };
        node::run(cfg, node::Options::default()).await
    })
}

pub fn check(config: &Path, ignition: Option<&Path>) -> Result<()> {
    let (cfg, config) = match ignition {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let root =
                tempfile::Builder::new().prefix("node-agent-check-").tempdir().context("creating a scratch root")?;
            let cfg = crate::config::providers::apply_ignition(&bytes, root.path())
                .with_context(|| format!("Ignition config {}", path.display()))?;
            (cfg, path)
        }
        None => (NodeConfig::load(config)?, config),
    };
    // The TLS material must load as `run` will load it.
    crate::etcd::Client::new(&cfg.etcd.endpoints, cfg.etcd.tls.as_ref())
        .with_context(|| format!("node config {}", config.display()))?;
    let address = if cfg.node.net.dhcp { "dhcp".to_owned() } else { cfg.node.address.to_string() };
    println!(
        "node-agent: config {} ok: node {} role {} address {address}",
        config.display(),
        cfg.node.name,
        cfg.node.role
    );
    Ok(())
}

pub fn pod(args: &PodArgs) -> Result<()> {
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

pub fn probe_send(to: SocketAddr, tries: u32, netns: Option<PathBuf>) -> Result<()> {
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
