use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::AddressFamily;

use super::Netlink;
use crate::types::MacAddr;

impl Netlink {
    /// `ip neigh replace IP lladdr MAC dev IDX nud permanent`
    pub async fn replace_neigh(&self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .with_context(|| format!("ip neigh replace {ip} lladdr {mac}"))
    }

    /// `ip neigh del IP dev IDX` (gone already is fine)
    pub async fn del_neigh(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !super::is_not_found(&e) => Err(e).with_context(|| format!("ip neigh del {ip}")),
            _ => Ok(()),
        }
    }

    /// `ip -4 neigh show dev IDX`: each neighbour's address and MAC.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, Option<MacAddr>)>> {
        let req = self.handle.neighbours().get().set_address_family(AddressFamily::Inet);
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.context("ip neigh show")? {
            if m.header.ifindex == index {
                out.extend(neigh_of(&m));
            }
        }
        Ok(out)
    }
}

/// A neighbour message's IPv4 address and link-layer address.
pub(super) fn neigh_of(m: &NeighbourMessage) -> Option<(Ipv4Addr, Option<MacAddr>)> {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
            // Bridge (FDB) messages carry the remote address undecoded.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                ip = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr),
            _ => {}
        }
    }
    Some((ip?, mac))
}
