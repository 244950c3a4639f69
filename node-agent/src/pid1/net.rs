//! Bringing up the node network as PID 1: loopback, and the interface with
//! the node's MAC given the node IP.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::NodeConfig;
use crate::log;
use crate::netlink::Netlink;

/// `ip link set lo up; ip addr add ADDR dev <by MAC>; ip link set <it> up`
pub async fn up(cfg: &NodeConfig) -> Result<()> {
    let nl = Netlink::connect()?;
    if let Some(lo) = nl.link_by_name("lo").await? {
        nl.set_up(lo.index).await?;
    }
    // The driver may still be probing the device: wait for it.
    for _ in 0..100 {
        if let Some(link) = nl.links().await?.into_iter().find(|l| l.mac == Some(cfg.node.mac)) {
            nl.set_only_addr(link.index, cfg.node.address).await?;
            nl.set_up(link.index).await?;
            log::info(&format!("node network: {} on {} ({})", cfg.node.address, link.name, cfg.node.mac));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no interface has the node MAC {}", cfg.node.mac)
}
