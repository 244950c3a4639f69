//! A node's first-boot work by role, then following the cluster forever.

mod disk;
pub mod etcd;
mod pods;
pub mod probe;
mod state;
mod sys;

use anyhow::{Context, Result};

pub use pods::PodNetwork;

use crate::process::retry::{self, retry};

use crate::config::NodeConfig;
use crate::etcd::Client;
use crate::flannel::manager;
use crate::log;

/// Choices made by the kernel command line (image) or flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Run the connectivity probe after `ready`.
    pub probe: bool,
    /// Running as the image's node process (under our PID 1).
    pub in_image: bool,
}

/// The `panic-in-task` failpoint: a spawned task panics once the node is ready.
fn panic_in_task_failpoint(cfg: &NodeConfig) {
    if crate::failpoint::once_per_boot("panic-in-task", &cfg.paths.state_dir) {
        tokio::spawn(async { panic!("failpoint panic-in-task: a task panicked on purpose") });
    }
}

/// The `ready` line (with boot timings), after a word if the image's kernel
/// is tainted; then the `panic-in-task` failpoint, which fires once ready.
fn say_ready(cfg: &NodeConfig, opts: Options, what: &str) {
    if opts.in_image {
        sys::warn_if_tainted(&cfg.paths.proc_sys);
    }
    log::info(&format!("ready {what} uptime={} cpu={}", log::uptime(), log::cpu()));
    panic_in_task_failpoint(cfg);
}

/// In the image, a node config written for Flatcar (NODE.ign fetched over
/// PXE or a cloud) names no containerd: the image's own runs when the image
/// carries it and the role has pods.
fn with_image_runtime(mut cfg: NodeConfig) -> NodeConfig {
    let spec = node_config::Containerd::default();
    if cfg.containerd.is_none() && cfg.node.role.has_pods() && spec.bin.exists() {
        cfg.containerd = Some(spec);
    }
    cfg
}

/// Runs the node's role; returns only on a setup error.
pub async fn run(cfg: NodeConfig, opts: Options) -> Result<()> {
    let cfg = if opts.in_image { with_image_runtime(cfg) } else { cfg };
    let client = Client::new(&cfg.etcd.endpoints, cfg.etcd.tls.as_ref())?;
    let role = cfg.node.role;
    if let Some(m) = cfg.etcd.member.clone().filter(|m| m.supervise) {
        // Only the image's PID 1 child owns the machine's disks.
        if opts.in_image {
            if let Err(e) = disk::prepare(&cfg.paths.etcd_data_dir, "etcd") {
                log::error(&format!("etcd data disk: {e:#}; keeping etcd data in memory"));
            }
        }
        let ca = cfg.etcd.tls.as_ref().map(|t| t.ca.clone());
        let others: Vec<String> = cfg.etcd.endpoints.iter().filter(|e| **e != m.client_url).cloned().collect();
        let others = if others.is_empty() { None } else { Some(Client::new(&others, cfg.etcd.tls.as_ref())?) };
        tokio::spawn(etcd::supervise(m, ca, cfg.paths.clone(), others));
    }
    if !role.has_pods() {
        // etcd answers once it has a quorum; then the network config goes in,
        // so the first worker finds it.
        retry("waiting for etcd and putting the network config", || {
            manager::ensure_network_config(&client, &cfg.network)
        })
        .await;
        if let Some(access) = &cfg.etcd.access {
            // After the config: nodes may only read it once this is done.
            retry("making etcd's users and turning authentication on", || crate::etcd::access::ensure(&client, access))
                .await;
            log::info(&format!("etcd authentication on: {} node users", access.nodes.len()));
            match crate::etcd::access::bypass_warning(&client).await {
                Ok(Some(why)) => log::warn(&why),
                Ok(None) => {}
                Err(e) => log::warn(&format!("asking etcd its version: {e:#}")),
            }
        }
        say_ready(&cfg, opts, &format!("role={role}"));
        return std::future::pending().await;
    }
    if let Some(spec) = cfg.policy.clone() {
        // Before the conflist names the plugin: its ADD waits for us.
        crate::policy::install_plugin(&cfg.paths.cni_bin_dir).context("installing the CNI endpoint plugin")?;
        let cri = cfg.containerd.as_ref().map(|c| c.socket.clone());
        let run_flannel = cfg.paths.run_flannel.clone();
        tokio::spawn(crate::policy::run(spec, cfg.node.name.clone(), client.clone(), cri, run_flannel));
    }
    let mut pods = PodNetwork::start(cfg.clone(), client.clone(), opts.in_image).await?;
    let rev = loop {
        match pods.resync().await {
            Ok(rev) => break rev,
            Err(e) => log::warn(&format!("syncing leases (retrying): {e:#}")),
        }
        tokio::time::sleep(retry::MAX).await;
    };
    let subnet = pods.subnet();
    say_ready(&cfg, opts, &format!("role={role} subnet={subnet}"));
    // kubelet's runtime once our conflist is there: a sandbox asked for
    // earlier would find no network to join.
    let mut runtime = None;
    if let Some(spec) = cfg.containerd.clone() {
        if opts.in_image {
            if let Err(e) = disk::prepare(&spec.root, "containerd") {
                log::error(&format!("containerd data disk: {e:#}; keeping containerd's data in memory"));
            }
        }
        let (ready, watch) = tokio::sync::watch::channel(0);
        runtime = Some(watch);
        tokio::spawn(crate::runtime::supervise(spec, cfg.paths.clone(), ready));
    }
    if opts.probe {
        tokio::spawn(async move {
            if let Err(e) = probe::run(cfg, client, subnet, runtime).await {
                log::error(&format!("probe: {e:#}"));
            }
        });
    }
    pods.follow(rev).await
}
