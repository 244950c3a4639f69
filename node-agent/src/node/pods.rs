//! Pod networking on masters and workers: take a subnet lease, build the
//! overlay, prepare kubelet's CNI, then follow every other node's lease.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use super::{state, sys};
use crate::backend::Backend;
use crate::cni::{Conflist, Rules, SubnetEnv};
use crate::config::NodeConfig;
use crate::etcd::{Client, WatchResponse};
use crate::flannel::lease::{self, SUBNETS_PREFIX};
use crate::flannel::manager::{self, Acquired, SubnetManager, LEASE_TTL};
use crate::flannel::{guard, Lease};
use crate::log;
use crate::netlink::{LinkInfo, Netlink};
use crate::process::retry::{self, retry};

/// Written (in the image, on tmpfs: once per boot) after flannel's rules
/// first went in.
const RULES_INSTALLED: &str = "/run/node-agent/iptables-rules";

/// The running pod network of this node.
pub struct PodNetwork {
    cfg: NodeConfig,
    /// The image's node process: this boot's kernel state is ours alone.
    in_image: bool,
    mgr: SubnetManager,
    backend: Backend,
    lease: Lease,
    /// Our lease was just created: the next full list checks for an older
    /// one of ours (`SubnetManager::move_to_older`).
    created: bool,
}

impl PodNetwork {
    /// Everything up to `ready`.
    pub async fn start(cfg: NodeConfig, client: Client, in_image: bool) -> Result<Self> {
        // In the image PID 1 loads these (in the background, see
        // `configure`); under systemd the host's modprobe does.
        if !in_image {
            for m in ["vxlan", "bridge", "br_netfilter", "veth"] {
                sys::ensure_module(m);
            }
        }
        let nl = Netlink::connect()?;
        let ip = cfg.node.ip();
        let node_link = retry("finding the node interface", || node_link(&nl, ip)).await;
        let net = retry("network config", || safe_network(&client, &cfg, &nl)).await;
        log::info(&format!("etcd answered: network {} uptime={} cpu={}", net.network, log::uptime(), log::cpu()));
        let vtep = state::vtep_mac(&cfg.paths.state_dir, &cfg)?;
        let backend = Backend::new(nl, net, node_link, cfg.node.address, vtep);
        let ttl = cfg.network.lease_ttl.map(|t| t as i64).unwrap_or(LEASE_TTL);
        let mgr = SubnetManager { client, net, attrs: backend.attrs(), ttl };
        let previous = SubnetEnv::previous_subnet(&cfg.paths.run_flannel);
        let Acquired { lease, created } = retry("acquiring a subnet lease", || mgr.acquire_claim(previous)).await;
        log::info(&format!(
            "acquired lease {} (etcd lease {:x}) uptime={} cpu={}",
            lease.subnet,
            lease.etcd_lease,
            log::uptime(),
            log::cpu()
        ));
        let mut me = PodNetwork { cfg, in_image, mgr, backend, lease, created };
        me.configure().await?;
        Ok(me)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.lease.subnet
    }

    /// Node-side setup for our subnet: device, files, sysctls, rules.
    async fn configure(&mut self) -> Result<()> {
        if self.in_image {
            // The overlay, netfilter and bridge drivers PID 1 loads while we
            // reached etcd.
            crate::kmod::pod_modules_loaded(std::time::Duration::from_secs(60)).await;
        }
        let subnet = self.lease.subnet;
        self.backend.configure(subnet).await?;
        let net = self.mgr.net;
        let paths = &self.cfg.paths;
        SubnetEnv { network: net.network, subnet, mtu: self.backend.mtu(), ipmasq: true }.write(&paths.run_flannel)?;
        let ipam_dir = paths.cni_ipam_dir.to_string_lossy().into_owned();
        let policy_run_dir = self.cfg.policy.as_ref().map(|p| p.run_dir.to_string_lossy().into_owned());
        Conflist { network: net.network, subnet, mtu: self.backend.mtu(), ipam_dir, policy_run_dir }
            .write(&paths.cni_conf_dir)?;
        sys::set_sysctl(&paths.proc_sys, "net/ipv4/ip_forward", "1")?;
        if let Err(e) = sys::set_sysctl(&paths.proc_sys, "net/bridge/bridge-nf-call-iptables", "1") {
            log::debug(&format!("{e:#}"));
        }
        let rules = Rules { network: net.network, subnet };
        if net.nftables {
            return crate::cni::nft::apply(&rules).context("installing flannel's nftables rules");
        }
        // The image's first node process of a boot finds the tables as the
        // kernel made them, empty: no need to read them first.
        let marker = std::path::Path::new(RULES_INSTALLED);
        let known_empty = self.in_image && !marker.exists();
        rules.apply(&paths.iptables.to_string_lossy(), known_empty).context("installing flannel's iptables rules")?;
        if self.in_image {
            let _ = marker.parent().map(std::fs::create_dir_all);
            let _ = std::fs::write(marker, b"");
        }
        Ok(())
    }

    /// Lists every lease and makes the kernel match; returns the revision.
    /// The first one makes the node ready; later ones follow watch gaps.
    pub async fn resync(&mut self) -> Result<i64> {
        let (leases, rev) = manager::list_leases(&self.mgr.client).await?;
        let mut moved = false;
        if std::mem::take(&mut self.created) {
            if let Some(older) = self.mgr.move_to_older(&self.lease, &leases).await? {
                self.lease = older;
                self.configure().await?;
                moved = true; // the list predates the move
            }
        }
        if !moved && !leases.iter().any(|l| l.subnet == self.lease.subnet && l.attrs == self.lease.attrs) {
            self.reacquire("our lease is gone from etcd").await?;
        }
        if moved {
            // The VXLAN device's new address took its routes away.
            self.backend.reprogram(&leases).await?;
        } else {
            self.backend.sync(&leases).await?;
        }
        Ok(rev)
    }

    async fn reacquire(&mut self, why: &str) -> Result<()> {
        log::warn(&format!("{why}; acquiring again"));
        let previous = Some(self.lease.subnet);
        let Acquired { lease, created } =
            retry("re-acquiring a subnet lease", || self.mgr.acquire_claim(previous)).await;
        let changed = lease.subnet != self.lease.subnet;
        self.lease = lease;
        self.created = created;
        log::info(&format!("acquired lease {} (etcd lease {:x})", self.lease.subnet, self.lease.etcd_lease));
        if changed {
            self.configure().await?;
            // A new address on the VXLAN device took the kernel's routes
            // through it away: program every peer again.
            let (leases, _) = manager::list_leases(&self.mgr.client).await?;
            self.backend.reprogram(&leases).await?;
        }
        Ok(())
    }

    /// Follows leases forever: watch events, renewals, and resyncs after gaps.
    pub async fn follow(mut self, mut rev: i64) -> ! {
        let mut renew = tokio::time::interval(self.mgr.renew_interval());
        renew.tick().await;
        loop {
            let client = self.mgr.client.clone();
            let mut watch = match client.watch_prefix(SUBNETS_PREFIX, rev + 1).await {
                Ok(w) => w,
                Err(e) => {
                    log::warn(&format!("watching leases: {e:#}"));
                    tokio::time::sleep(retry::MAX).await;
                    rev = self.resync_logged(rev).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    msg = watch.next() => match msg {
                        Ok(Some(r)) => match self.on_watch(r, &mut rev).await {
                            Ok(true) => {}
                            Ok(false) => { rev = self.resync_logged(rev).await; break; }
                            Err(e) => { log::warn(&format!("applying a lease change: {e:#}")); rev = self.resync_logged(rev).await; break; }
                        },
                        Ok(None) => { log::warn("lease watch closed; resyncing"); rev = self.resync_logged(rev).await; break; }
                        Err(e) => { log::warn(&format!("lease watch: {e:#}; resyncing")); rev = self.resync_logged(rev).await; break; }
                    },
                    _ = renew.tick() => self.renew().await,
                }
            }
        }
    }

    async fn resync_logged(&mut self, rev: i64) -> i64 {
        match self.resync().await {
            Ok(r) => r,
            Err(e) => {
                log::warn(&format!("resync: {e:#}"));
                rev
            }
        }
    }

    async fn renew(&mut self) {
        match self.mgr.renew(&self.lease).await {
            Ok(true) => log::debug(&format!("renewed lease {}", self.lease.subnet)),
            Ok(false) => {
                if let Err(e) = self.reacquire("our etcd lease expired").await {
                    log::error(&format!("{e:#}"));
                }
            }
            Err(e) => log::warn(&format!("renewing lease {}: {e:#}", self.lease.subnet)),
        }
    }

    /// Applies one watch message. Ok(false) asks for a full resync (a gap).
    async fn on_watch(&mut self, r: WatchResponse, rev: &mut i64) -> Result<bool> {
        if r.canceled || r.compact_revision > 0 {
            log::warn(&format!("lease watch lost history (compacted at {}); resyncing", r.compact_revision));
            return Ok(false);
        }
        for ev in &r.events {
            let kv = ev.kv.clone().unwrap_or_default();
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let Ok(subnet) = lease::parse_key(&key) else {
                log::warn(&format!("skipping malformed lease key {key}"));
                continue;
            };
            if ev.is_delete() {
                if subnet == self.lease.subnet {
                    self.reacquire("our lease was deleted").await?;
                } else {
                    log::info(&format!("lease {subnet} removed"));
                    self.backend.remove(subnet).await?;
                }
            } else if subnet == self.lease.subnet {
                let ours = manager::parse_kv(&kv.key, &kv.value, kv.lease);
                if ours.is_none_or(|l| l.attrs != self.lease.attrs) {
                    log::warn(&format!("our lease {subnet} was overwritten by another writer; writing ours back"));
                    self.lease = self.mgr.reclaim(&self.lease).await?;
                }
            } else if let Some(l) = manager::parse_kv(&kv.key, &kv.value, kv.lease) {
                self.backend.add(&l).await?;
            }
            *rev = (*rev).max(kv.mod_revision);
        }
        *rev = (*rev).max(r.revision());
        Ok(true)
    }
}

async fn node_link(nl: &Netlink, ip: Ipv4Addr) -> Result<LinkInfo> {
    nl.link_with_ipv4(ip).await
}

/// The network config from etcd (put first if absent), refused while it
/// would take over this node's own traffic: anyone with a node certificate
/// can write it, and a bad one must not cut the node off from etcd.
async fn safe_network(client: &crate::etcd::Client, cfg: &NodeConfig, nl: &Netlink) -> Result<crate::flannel::Network> {
    let net = manager::ensure_network_config(client, &cfg.network).await?;
    let view = guard::NodeView { node_net: cfg.node.address, routes: node_routes(nl).await?, etcd: etcd_ips(cfg) };
    guard::check_network(&net, &view).context("refusing etcd's network config")?;
    Ok(net)
}

/// The main table's routes but the default route and the pod network's
/// own devices (an earlier run's `flannel.*` and CNI bridge), with their device.
async fn node_routes(nl: &Netlink) -> Result<Vec<(Ipv4Net, String)>> {
    let names: std::collections::HashMap<u32, String> =
        nl.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
    let routes = nl.routes().await?.into_iter().filter(|r| r.dst.prefix_len() > 0);
    let named = routes.map(|r| (r.dst, r.oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default()));
    Ok(named.filter(|(_, dev)| !dev.starts_with("flannel.") && dev != crate::cni::BRIDGE).collect())
}

/// The etcd endpoints that name an IPv4 address.
fn etcd_ips(cfg: &NodeConfig) -> Vec<Ipv4Addr> {
    let hosts = cfg.etcd.endpoints.iter().filter_map(|e| reqwest::Url::parse(e).ok()?.host_str().map(str::to_owned));
    hosts.filter_map(|h| h.parse().ok()).collect()
}
