//! What a Vagrant box adds to the node (config `guest`): DHCP on the links
//! that are not the node network's, so vagrant-libvirt sees an address on its
//! management network, and supervised services such as the SSH server.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::{Guest, NodeConfig};
use crate::log;
use crate::netlink::Netlink;
use crate::process::supervise;
use crate::types::MacAddr;

/// Starts the guest's work as background tasks of the current runtime.
pub fn start(cfg: &NodeConfig, guest: &Guest) {
    for s in &guest.services {
        let (name, argv) = (s.name.clone(), s.argv.clone());
        let log_path = cfg.paths.state_dir.join(format!("{name}.log"));
        tokio::spawn(async move { supervise::forever(&name, &argv, &log_path).await });
    }
    if guest.dhcp_other_links {
        tokio::spawn(dhcp_forever(cfg.node.mac));
    }
}

/// Leases every other NIC, then renews at half the shortest lease.
async fn dhcp_forever(node_mac: MacAddr) {
    loop {
        let wait = match lease_other_links(node_mac).await {
            Ok(secs) => Duration::from_secs(u64::from(secs / 2).clamp(30, 1800)),
            Err(e) => {
                log::warn(&format!("guest dhcp: {e:#}"));
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One DHCP round on each NIC without the node MAC; the shortest lease time.
async fn lease_other_links(node_mac: MacAddr) -> Result<u32> {
    let nl = Netlink::connect()?;
    let nics: Vec<_> =
        nl.links().await?.into_iter().filter(|l| l.mac.is_some_and(|m| m != node_mac) && is_nic(&l.name)).collect();
    if nics.is_empty() {
        bail!("no NIC besides the node network's yet");
    }
    let mut shortest = u32::MAX;
    for l in nics {
        nl.set_up(l.index).await?;
        // Sequential: every client binds UDP port 68.
        let lease = super::net::dhcp_link(&nl, &l).await?;
        log::info(&format!("guest dhcp: {}/{} on {} from {}", lease.address, lease.prefix_len, l.name, lease.server));
        shortest = shortest.min(lease.lease_secs.unwrap_or(3600));
    }
    Ok(shortest)
}

/// A link backed by a device (a NIC), not one we made (VXLAN, bridge, veth).
fn is_nic(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).join("device").exists()
}
