//! Bringing up the node network in the image's node process: loopback, and the interface with
//! the node's MAC given the node IP.

use std::time::Duration;

use anyhow::{bail, Context, Result};

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
            log::info(&format!(
                "node network: {} on {} ({}) uptime={} cpu={}",
                cfg.node.address,
                link.name,
                cfg.node.mac,
                crate::log::uptime(),
                crate::log::cpu()
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no interface has the node MAC {}", cfg.node.mac)
}

/// Before the node config is known (config by URL): every Ethernet link up
/// and DHCP on the first that answers, so the config can be fetched.
pub async fn dhcp_any() -> Result<()> {
    let nl = Netlink::connect()?;
    for _ in 0..50 {
        let links: Vec<_> = nl.links().await?.into_iter().filter(|l| l.name != "lo" && l.mac.is_some()).collect();
        for l in &links {
            nl.set_up(l.index).await?;
        }
        for l in links {
            match dhcp_link(&nl, &l).await {
                Ok(lease) => {
                    log::info(&format!(
                        "dhcp: {}/{} on {} from {}",
                        lease.address, lease.prefix_len, l.name, lease.server
                    ));
                    return Ok(());
                }
                Err(e) => log::warn(&format!("dhcp on {}: {e:#}", l.name)),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no interface got a DHCP lease")
}

/// One DHCP exchange on `link` (already up), then its address and default
/// route as the lease says.
pub async fn dhcp_link(nl: &Netlink, link: &crate::netlink::LinkInfo) -> Result<super::dhcp::DhcpLease> {
    let (name, mac) = (link.name.clone(), link.mac.context("a link without a MAC")?);
    let lease =
        tokio::task::spawn_blocking(move || super::dhcp::acquire(&name, mac, Duration::from_secs(10))).await??;
    nl.set_only_addr(link.index, ipnet::Ipv4Net::new(lease.address, lease.prefix_len)?).await?;
    if let Some(gw) = lease.router {
        let _ = nl.replace_route("0.0.0.0/0".parse().expect("valid"), gw, link.index, false).await;
    }
    Ok(lease)
}
