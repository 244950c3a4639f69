//! A node's first-boot work by role, then following the cluster forever.

mod disk;
pub mod etcd;
mod pods;
pub mod probe;
mod retry;
mod state;
pub mod supervise;
mod sys;

use anyhow::{Context, Result};

pub use pods::PodNetwork;
pub use retry::retry;

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

/// The tokio runtime the node's work runs on (`node-agent run`, the
/// image's node process, and the first-request benchmark).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")
}

/// Seconds since the kernel started, for boot timings.
pub fn uptime() -> String {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    text.split_whitespace().next().map(|s| format!("{s}s")).unwrap_or_else(|| "?".into())
}

/// CPU time this process and the children it waited for have used, for
/// boot timings: the agent's own work, as opposed to waiting.
pub fn cpu() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    match fields.len() {
        4 => format!("{}ms", fields.iter().sum::<u64>() * 1000 / ticks.max(1)),
        _ => "?".into(),
    }
}

/// A panic in any task or thread ends the node process at once, so its
/// supervisor (PID 1 in the image, systemd on Container Linux) restarts it
/// whole: a task that died quietly would leave a node that looks alive but
/// no longer renews its lease or follows its peers.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error(&format!("{info}; the node process exits so that it is restarted whole"));
        std::process::abort();
    }));
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
    log::info(&format!("ready {what} uptime={} cpu={}", uptime(), cpu()));
    panic_in_task_failpoint(cfg);
}

/// Runs the node's role; returns only on a setup error.
pub async fn run(cfg: NodeConfig, opts: Options) -> Result<()> {
    let client = Client::new(&cfg.etcd.endpoints, cfg.etcd.tls.as_ref())?;
    let role = cfg.node.role;
    if let Some(m) = cfg.etcd.member.clone().filter(|m| m.supervise) {
        // Only the image's PID 1 child owns the machine's disks.
        if opts.in_image {
            if let Err(e) = disk::prepare(&cfg.paths.etcd_data_dir) {
                log::error(&format!("etcd data disk: {e:#}; keeping etcd data in memory"));
            }
        }
        let ca = cfg.etcd.tls.as_ref().map(|t| t.ca.clone());
        tokio::spawn(etcd::supervise(m, ca, cfg.paths.clone()));
    }
    if !role.has_pods() {
        // etcd answers once it has a quorum; then the network config goes in,
        // so the first worker finds it.
        retry("waiting for etcd and putting the network config", || {
            manager::ensure_network_config(&client, &cfg.network)
        })
        .await;
        say_ready(&cfg, opts, &format!("role={role}"));
        return std::future::pending().await;
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
    if opts.probe {
        tokio::spawn(async move {
            if let Err(e) = probe::run(cfg, client, subnet).await {
                log::error(&format!("probe: {e:#}"));
            }
        });
    }
    pods.follow(rev).await
}
