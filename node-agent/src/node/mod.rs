//! A node's first-boot work by role, then following the cluster forever.

mod pods;
mod retry;
mod state;
mod sys;

use anyhow::Result;

pub use pods::PodNetwork;
pub use retry::retry;

use crate::config::NodeConfig;
use crate::etcd::Client;
use crate::flannel::manager;
use crate::log;

/// Runs the node's role; returns only on a setup error.
pub async fn run(cfg: NodeConfig) -> Result<()> {
    let client = Client::new(&cfg.etcd.endpoints)?;
    let role = cfg.node.role;
    if role.has_pods() {
        let mut pods = PodNetwork::start(cfg, client).await?;
        let rev = loop {
            match pods.sync().await {
                Ok(rev) => break rev,
                Err(e) => log::warn(&format!("syncing leases (retrying): {e:#}")),
            }
            tokio::time::sleep(retry::MAX).await;
        };
        log::info(&format!("ready role={role} subnet={}", pods.subnet()));
        pods.follow(rev).await
    } else {
        // On Container Linux etcd-member.service runs etcd; here we put the
        // network config once etcd answers, so the first worker finds it.
        retry("network config", || manager::ensure_network_config(&client, &cfg.network)).await;
        log::info(&format!("ready role={role}"));
        std::future::pending().await
    }
}
