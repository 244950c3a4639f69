//! Bringing up the node network in the image's node process: loopback, and
//! the node interface (by MAC or name) with its static address, gateway, DNS
//! and MTU, or by DHCP.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

use crate::config::NodeConfig;
use crate::log;
use crate::netlink::{LinkInfo, Netlink};

/// `ip link set lo up`, then the node interface (by MAC, or by name) up
/// with its MTU and its address: static (with the gateway as default route
/// and the DNS servers in resolv.conf) or by DHCP, renewed in the
/// background. Returns the config with the address the node holds.
pub async fn up(cfg: &NodeConfig) -> Result<NodeConfig> {
    let nl = Netlink::connect()?;
    if let Some(lo) = nl.link_by_name("lo").await? {
        nl.set_up(lo.index).await?;
    }
    let link = node_link(&nl, cfg).await?;
    match cfg.node.net.mtu {
        Some(mtu) => nl.set_mtu_up(link.index, mtu.into()).await?,
        None => nl.set_up(link.index).await?,
    }
    let mut cfg = cfg.clone();
    let net = &cfg.node.net;
    if net.dhcp {
        let lease = dhcp_link(&nl, &link).await?;
        write_resolv_conf(Path::new(RESOLV_CONF), &lease.dns)?;
        cfg.node.address = Ipv4Net::new(lease.address, lease.prefix_len)?;
        log::info(&format!(
            "dhcp: {} on {} from {} router {} dns {}",
            cfg.node.address,
            link.name,
            lease.server,
            lease.router.map_or("-".into(), |r| r.to_string()),
            join(&lease.dns)
        ));
        tokio::spawn(renew_forever(link.clone(), lease));
    } else {
        nl.set_only_addr(link.index, cfg.node.address).await?;
        if let Some(gw) = net.gateway {
            nl.replace_route(Ipv4Net::default(), gw, link.index, false).await.context("the default route")?;
        }
        if !net.dns.is_empty() {
            write_resolv_conf(Path::new(RESOLV_CONF), &net.dns)?;
        }
    }
    log::info(&format!(
        "node network: {} on {} ({}){} uptime={} cpu={}",
        cfg.node.address,
        link.name,
        link.mac.map_or("-".into(), |m| m.to_string()),
        held_extras(&nl).await,
        crate::log::uptime(),
        crate::log::cpu()
    ));
    Ok(cfg)
}

/// The default route and DNS servers as the kernel and resolv.conf now
/// hold them (read back, not what we meant to set), for the log.
async fn held_extras(nl: &Netlink) -> String {
    let mut out = String::new();
    if let Ok(routes) = nl.routes().await {
        if let Some(gw) = routes.iter().find(|r| r.dst.prefix_len() == 0).and_then(|r| r.gateway) {
            out.push_str(&format!(" default via {gw}"));
        }
    }
    let dns: Vec<String> = std::fs::read_to_string(RESOLV_CONF)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(str::to_owned)
        .collect();
    if !dns.is_empty() {
        out.push_str(&format!(" dns {}", dns.join(",")));
    }
    out
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Under systemd (Flatcar), networkd leases the node interface: the
/// config with the address it holds, once it holds one.
pub async fn held_address(cfg: &NodeConfig) -> Result<NodeConfig> {
    let nl = Netlink::connect()?;
    let mut cfg = cfg.clone();
    for waited in 0u32.. {
        if let Ok(link) = node_link(&nl, &cfg).await {
            if let Some((addr, _)) = nl.ipv4_addrs(link.index).await?.into_iter().next() {
                cfg.node.address = addr;
                log::info(&format!("node network: {addr} on {} (DHCP)", link.name));
                return Ok(cfg);
            }
        }
        if waited % 30 == 29 {
            log::warn("waiting for the node interface's DHCP address");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    unreachable!()
}

/// The node interface: by name when the config gives one, else by MAC.
/// The driver may still be probing the device: wait for it.
async fn node_link(nl: &Netlink, cfg: &NodeConfig) -> Result<LinkInfo> {
    let wanted = |l: &LinkInfo| match &cfg.node.net.interface {
        Some(name) => &l.name == name,
        None => l.mac == Some(cfg.node.mac),
    };
    for _ in 0..100 {
        if let Some(link) = nl.links().await?.into_iter().find(wanted) {
            return Ok(link);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match &cfg.node.net.interface {
        Some(name) => bail!("no interface is named {name}"),
        None => bail!("no interface has the node MAC {}", cfg.node.mac),
    }
}

/// `nameserver` lines, written whole (`cni::write_atomic`).
pub fn write_resolv_conf(path: &Path, servers: &[Ipv4Addr]) -> Result<()> {
    if servers.is_empty() {
        return Ok(());
    }
    let text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
    crate::cni::write_atomic(path, &text).with_context(|| format!("writing {}", path.display()))
}

fn join(ips: &[Ipv4Addr]) -> String {
    if ips.is_empty() {
        return "-".into();
    }
    ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Renews the node's lease at half its time (RFC 2131's T1). A server that
/// hands out another address ends the node process: flannel's lease names
/// the old one, and PID 1 starts the node over with the new.
async fn renew_forever(link: LinkInfo, mut held: super::dhcp::DhcpLease) {
    loop {
        let secs = u64::from(held.lease_secs.unwrap_or(3600) / 2).clamp(10, 86_400);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let nl = match Netlink::connect() {
            Ok(nl) => nl,
            Err(e) => {
                log::warn(&format!("dhcp renew: {e:#}"));
                continue;
            }
        };
        match dhcp_link(&nl, &link).await {
            Ok(lease) if lease.address == held.address => {
                if lease.dns != held.dns {
                    let _ = write_resolv_conf(Path::new(RESOLV_CONF), &lease.dns);
                }
                log::info(&format!(
                    "dhcp: renewed {} on {} for {}s",
                    lease.address,
                    link.name,
                    lease.lease_secs.unwrap_or(0)
                ));
                held = lease;
            }
            Ok(lease) => {
                log::error(&format!(
                    "dhcp: the server moved {} from {} to {}; restarting the node",
                    link.name, held.address, lease.address
                ));
                std::process::exit(1);
            }
            Err(e) => log::warn(&format!("dhcp renew on {}: {e:#}", link.name)),
        }
    }
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
                    // A config URL may name its server by host name.
                    if let Err(e) = write_resolv_conf(Path::new(RESOLV_CONF), &lease.dns) {
                        log::warn(&format!("{e:#}"));
                    }
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
    let net = ipnet::Ipv4Net::new(lease.address, lease.prefix_len)?;
    nl.set_only_addr(link.index, net).await?;
    if let Some(gw) = lease.router.filter(|gw| super::dhcp::check_lease(*gw, Ipv4Addr::BROADCAST).is_ok()) {
        // A router outside the lease's network (GCP's /32) is reached on-link.
        let onlink = !net.trunc().contains(&gw) || gw == lease.address;
        nl.replace_route(Ipv4Net::default(), gw, link.index, onlink)
            .await
            .with_context(|| format!("the default route via {gw} on {}", link.name))?;
    }
    Ok(lease)
}
