//! flannel's VXLAN backend: device `flannel.<VNI>` (no learning, bound to the
//! node interface), address `<subnet>.0/32`, MTU link − 50; per remote lease
//! a neighbour `<subnet>.0 → VtepMAC`, an FDB entry `VtepMAC → PublicIP` and
//! a route `<subnet> via <subnet>.0 dev flannel.<VNI> onlink`.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use crate::flannel::{BackendData, Lease, LeaseAttrs, Network};
use crate::netlink::{LinkInfo, Netlink, VxlanSpec};
use crate::types::MacAddr;

/// VXLAN over IPv4 costs 50 bytes: outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14.
pub const OVERHEAD: u32 = 50;

pub struct Vxlan {
    nl: Netlink,
    spec: VxlanSpec,
    index: u32,
}

impl Vxlan {
    pub fn new(nl: Netlink, net: &Network, node: LinkInfo, node_ip: Ipv4Addr, vtep_mac: MacAddr) -> Self {
        let spec = VxlanSpec {
            name: format!("flannel.{}", net.backend.vni),
            vni: net.backend.vni,
            local: node_ip,
            underlay: node.index,
            port: net.backend.port,
            mac: vtep_mac,
            mtu: node.mtu.saturating_sub(OVERHEAD),
        };
        Vxlan { nl, spec, index: 0 }
    }

    pub fn attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.spec.local,
            backend: BackendData::Vxlan { vni: self.spec.vni, vtep_mac: self.spec.mac },
        }
    }

    pub fn mtu(&self) -> u32 {
        self.spec.mtu
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Creates (or keeps) the device and gives it `<subnet>.0/32`.
    pub async fn configure(&mut self, ours: Ipv4Net) -> Result<()> {
        let link = self.nl.ensure_vxlan(&self.spec).await?;
        self.index = link.index;
        let addr = Ipv4Net::new(ours.network(), 32).expect("/32 is valid");
        self.nl.set_only_addr(link.index, addr).await.with_context(|| format!("addressing {}", self.spec.name))
    }

    pub fn accepts(&self, lease: &Lease) -> bool {
        matches!(lease.attrs.backend, BackendData::Vxlan { vni, .. } if vni == self.spec.vni)
    }

    pub async fn add(&self, lease: &Lease) -> Result<()> {
        let BackendData::Vxlan { vtep_mac, .. } = lease.attrs.backend else { return Ok(()) };
        let gw = lease.subnet.network();
        // Neighbour and FDB first, so the route never points at an unknown MAC.
        let (n, f) = tokio::join!(
            self.nl.replace_neigh(self.index, gw, vtep_mac),
            self.nl.replace_fdb(self.index, vtep_mac, lease.attrs.public_ip)
        );
        n?;
        f?;
        self.nl.replace_route(lease.subnet, gw, self.index, true).await
    }

    pub async fn remove(&self, lease: &Lease) -> Result<()> {
        let BackendData::Vxlan { vtep_mac, .. } = lease.attrs.backend else { return Ok(()) };
        let gw = lease.subnet.network();
        self.nl.del_route(lease.subnet, self.index).await?;
        self.nl.del_neigh(self.index, gw).await?;
        self.nl.del_fdb(self.index, vtep_mac, lease.attrs.public_ip).await
    }

    /// Removes the device's neighbours and FDB entries that no lease in
    /// `wanted` accounts for: an earlier run's, for leases deleted since.
    pub async fn remove_stale(&self, wanted: &[&Lease]) -> Result<()> {
        if self.index == 0 {
            return Ok(());
        }
        let mut neighs = HashSet::new();
        let mut fdb = HashSet::new();
        for l in wanted {
            if let BackendData::Vxlan { vtep_mac, .. } = l.attrs.backend {
                neighs.insert((l.subnet.network(), vtep_mac));
                fdb.insert((vtep_mac, l.attrs.public_ip));
            }
        }
        for (ip, mac) in self.nl.neighbours(self.index).await? {
            if !mac.is_some_and(|m| neighs.contains(&(ip, m))) {
                self.nl.del_neigh(self.index, ip).await?;
            }
        }
        for (mac, dst) in self.nl.fdb_entries(self.index).await? {
            if !fdb.contains(&(mac, dst)) {
                self.nl.del_fdb(self.index, mac, dst).await?;
            }
        }
        Ok(())
    }
}
