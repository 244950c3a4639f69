//! Backends turn leases into the kernel state that routes pod traffic to
//! other nodes: `vxlan` (flannel's overlay) and `host_gw` (plain routes).

mod host_gw;
mod vxlan;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use anyhow::Result;
use futures::{stream, StreamExt};
use ipnet::Ipv4Net;

use crate::config::BackendType;
use crate::flannel::{guard, BackendData, Lease, LeaseAttrs, Network};
use crate::log;
use crate::netlink::{LinkInfo, Netlink, Route};
use crate::types::MacAddr;

/// How many netlink requests are in flight at once during a resync.
const PARALLEL: usize = 64;

pub enum Kind {
    Vxlan(vxlan::Vxlan),
    HostGw(host_gw::HostGw),
}

impl Kind {
    /// Whether this backend can route to `lease` at all.
    fn accepts(&self, lease: &Lease) -> bool {
        match self {
            Kind::Vxlan(v) => v.accepts(lease),
            Kind::HostGw(_) => lease.attrs.backend == BackendData::HostGw,
        }
    }

    async fn add(&self, lease: &Lease) -> Result<()> {
        match self {
            Kind::Vxlan(v) => v.add(lease).await,
            Kind::HostGw(h) => h.add(lease).await,
        }
    }

    async fn remove(&self, lease: &Lease) -> Result<()> {
        match self {
            Kind::Vxlan(v) => v.remove(lease).await,
            Kind::HostGw(h) => h.remove(lease).await,
        }
    }

    /// Kernel entries other than routes that an earlier run left for leases gone since.
    async fn remove_stale(&self, wanted: &[&Lease]) -> Result<()> {
        match self {
            Kind::Vxlan(v) => v.remove_stale(wanted).await,
            Kind::HostGw(_) => Ok(()),
        }
    }

    /// Routes in the main table this backend may have made, for stale cleanup.
    fn owns_route(&self, r: &Route, net: &Network) -> bool {
        let in_net = net.network.contains(&r.dst) && r.dst.prefix_len() == net.subnet_len;
        in_net
            && match self {
                Kind::Vxlan(v) => r.oif == Some(v.index()),
                Kind::HostGw(h) => r.oif == Some(h.node.index),
            }
    }
}

/// A backend with the leases it has programmed.
pub struct Backend {
    kind: Kind,
    nl: Netlink,
    net: Network,
    ours: Option<Ipv4Net>,
    local: guard::Local,
    programmed: HashMap<Ipv4Net, Lease>,
    /// Leases already named as unusable: each distinct value is logged once.
    refused: Mutex<HashSet<Lease>>,
}

impl Backend {
    /// `node_addr` is the node address with the node network's prefix length.
    pub fn new(nl: Netlink, net: Network, node: LinkInfo, node_addr: Ipv4Net, vtep_mac: MacAddr) -> Self {
        let node_ip = node_addr.addr();
        let (kind, vtep) = match net.backend.kind {
            BackendType::Vxlan => {
                (Kind::Vxlan(vxlan::Vxlan::new(nl.clone(), &net, node, node_ip, vtep_mac)), Some(vtep_mac))
            }
            BackendType::HostGw => (Kind::HostGw(host_gw::HostGw::new(nl.clone(), node, node_ip)), None),
        };
        let local = guard::Local { address: node_addr, vtep_mac: vtep };
        Backend { kind, nl, net, ours: None, local, programmed: HashMap::new(), refused: Mutex::default() }
    }

    /// The attributes our lease advertises.
    pub fn attrs(&self) -> LeaseAttrs {
        match &self.kind {
            Kind::Vxlan(v) => v.attrs(),
            Kind::HostGw(h) => LeaseAttrs { public_ip: h.node_ip, backend: BackendData::HostGw },
        }
    }

    /// The MTU pods get (flannel's FLANNEL_MTU).
    pub fn mtu(&self) -> u32 {
        match &self.kind {
            Kind::Vxlan(v) => v.mtu(),
            Kind::HostGw(h) => h.node.mtu,
        }
    }

    /// Sets up the node side for our subnet (the VXLAN device and its address).
    pub async fn configure(&mut self, ours: Ipv4Net) -> Result<()> {
        if let Kind::Vxlan(v) = &mut self.kind {
            v.configure(ours).await?;
        }
        self.ours = Some(ours);
        Ok(())
    }

    /// Whether to program a lease: a peer's, of our backend, and safe.
    /// (Leases of other backends or VNIs are someone else's, as in flannel.)
    fn wants(&self, lease: &Lease) -> bool {
        Some(lease.subnet) != self.ours && self.kind.accepts(lease) && self.usable(lease)
    }

    /// Whether a lease is safe to program; one that is not is named once.
    fn usable(&self, lease: &Lease) -> bool {
        let net = &self.net;
        let problem = if crate::flannel::alloc::in_range(net, lease.subnet) {
            guard::lease_problem(net, &self.local, lease)
        } else {
            Some(format!(
                "not one of {}'s /{} subnets from {} to {}",
                net.network, net.subnet_len, net.subnet_min, net.subnet_max
            ))
        };
        let Some(why) = problem else { return true };
        let mut refused = self.refused.lock().expect("not poisoned");
        if refused.len() >= 10_000 {
            refused.clear(); // a writer flooding etcd with bad leases gets no more of our memory
        }
        if refused.insert(lease.clone()) {
            log::warn(&format!("skipping lease {}: {why}", lease.subnet));
        }
        false
    }

    /// A lease appeared or changed. One that is not usable (any more)
    /// takes away what an earlier value of it programmed.
    pub async fn add(&mut self, lease: &Lease) -> Result<()> {
        if !self.wants(lease) {
            return self.remove(lease.subnet).await;
        }
        if let Some(old) = self.programmed.get(&lease.subnet).cloned() {
            if old.attrs == lease.attrs {
                return Ok(());
            }
            self.kind.remove(&old).await?;
            self.programmed.remove(&lease.subnet);
        }
        self.kind.add(lease).await?;
        log::info(&format!("lease {} added for {}", lease.subnet, lease.attrs.public_ip));
        self.programmed.insert(lease.subnet, lease.clone());
        Ok(())
    }

    /// A lease went away.
    pub async fn remove(&mut self, subnet: Ipv4Net) -> Result<()> {
        if let Some(old) = self.programmed.remove(&subnet) {
            self.kind.remove(&old).await?;
        }
        Ok(())
    }

    /// Makes the kernel match `leases` exactly: removes what is no longer
    /// leased (including routes a previous run left), adds the rest in parallel.
    pub async fn sync(&mut self, leases: &[Lease]) -> Result<()> {
        let wanted: HashMap<Ipv4Net, &Lease> = leases.iter().filter(|l| self.wants(l)).map(|l| (l.subnet, l)).collect();
        let gone: Vec<Lease> = self
            .programmed
            .values()
            .filter(|l| wanted.get(&l.subnet).map(|w| w.attrs != l.attrs).unwrap_or(true))
            .cloned()
            .collect();
        for l in &gone {
            self.kind.remove(l).await?;
            self.programmed.remove(&l.subnet);
        }
        self.remove_stale_routes(&wanted).await?;
        self.kind.remove_stale(&wanted.values().copied().collect::<Vec<_>>()).await?;
        let todo: Vec<&Lease> = wanted.values().filter(|l| !self.programmed.contains_key(&l.subnet)).copied().collect();
        let kind = &self.kind;
        let results: Vec<(&Lease, Result<()>)> =
            stream::iter(todo.into_iter().map(|l| async move { (l, kind.add(l).await) }))
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        // One lease the kernel refuses is named and skipped; the rest go in.
        for (l, r) in results {
            match r {
                Ok(()) => {
                    self.programmed.insert(l.subnet, l.clone());
                }
                Err(e) => log::warn(&format!("skipping lease {} for {}: {e:#}", l.subnet, l.attrs.public_ip)),
            }
        }
        Ok(())
    }

    async fn remove_stale_routes(&self, wanted: &HashMap<Ipv4Net, &Lease>) -> Result<()> {
        for r in self.nl.routes().await? {
            let ours = Some(r.dst) == self.ours;
            if !ours
                && !wanted.contains_key(&r.dst)
                && !self.programmed.contains_key(&r.dst)
                && self.kind.owns_route(&r, &self.net)
            {
                if let Some(oif) = r.oif {
                    self.nl.del_route(r.dst, oif).await?;
                }
            }
        }
        Ok(())
    }

    /// Programs every lease again, whatever we believe the kernel holds.
    pub async fn reprogram(&mut self, leases: &[Lease]) -> Result<()> {
        self.programmed.clear();
        self.sync(leases).await
    }

    pub fn programmed(&self) -> usize {
        self.programmed.len()
    }
}
