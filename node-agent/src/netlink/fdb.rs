use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;

use super::Netlink;
use crate::types::MacAddr;

fn fdb_message(index: u32, mac: MacAddr, dst: Option<Ipv4Addr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(ip) = dst {
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    }
    msg
}

impl Netlink {
    /// `bridge fdb replace MAC dev IDX dst IP self permanent`
    pub async fn replace_fdb(&self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<()> {
        let mut req = self.handle.neighbours().add_bridge(index, &mac.0).replace();
        *req.message_mut() = fdb_message(index, mac, Some(dst));
        req.execute().await.with_context(|| format!("bridge fdb replace {mac} dst {dst}"))
    }

    /// `bridge fdb del MAC dev IDX self` (gone already is fine)
    pub async fn del_fdb(&self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<()> {
        match self.handle.neighbours().del(fdb_message(index, mac, Some(dst))).execute().await {
            Err(e) if !super::is_not_found(&e) => Err(e).with_context(|| format!("bridge fdb del {mac}")),
            _ => Ok(()),
        }
    }

    /// `bridge fdb show dev IDX`: the entries that send a MAC to a remote
    /// address (the ones the VXLAN backend makes).
    pub async fn fdb_entries(&self, index: u32) -> Result<Vec<(MacAddr, Ipv4Addr)>> {
        let req = self.handle.neighbours().get().set_address_family(AddressFamily::Bridge);
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.context("bridge fdb show")? {
            if m.header.ifindex == index {
                if let Some((dst, Some(mac))) = super::neigh::neigh_of(&m) {
                    out.push((mac, dst));
                }
            }
        }
        Ok(out)
    }
}
