use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
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
}
