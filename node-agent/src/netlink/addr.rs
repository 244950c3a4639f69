use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use super::Netlink;

pub(super) fn addresses_of(msg: &AddressMessage) -> Vec<Ipv4Addr> {
    msg.attributes
        .iter()
        .filter_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) | AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

impl Netlink {
    /// `ip -4 addr show dev IDX`
    pub async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Net, AddressMessage)>> {
        let mut s = self.handle.address().get().set_link_index_filter(index).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.context("listing addresses")? {
            if let Some(ip) = addresses_of(&m).first() {
                let net = Ipv4Net::new(*ip, m.header.prefix_len).context("bad prefix")?;
                out.push((net, m));
            }
        }
        Ok(out)
    }

    /// Makes `addr` the only IPv4 address of link `index`:
    /// `ip addr flush dev IDX; ip addr add ADDR dev IDX`.
    pub async fn set_only_addr(&self, index: u32, addr: Ipv4Net) -> Result<()> {
        let mut have = false;
        for (net, msg) in self.ipv4_addrs(index).await? {
            if net == addr {
                have = true;
            } else {
                self.handle.address().del(msg).execute().await.with_context(|| format!("removing {net}"))?;
            }
        }
        if !have {
            self.add_addr(index, addr).await?;
        }
        Ok(())
    }

    /// `ip addr add ADDR dev IDX`
    pub async fn add_addr(&self, index: u32, addr: Ipv4Net) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .with_context(|| format!("adding {addr} to link {index}"))
    }
}
