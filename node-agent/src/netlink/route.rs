use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::RouteMessageBuilder;

use super::Netlink;

/// A route as the agent programs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

fn parse(msg: &RouteMessage) -> Option<Route> {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), msg.header.destination_prefix_length).ok()?;
    Some(Route { dst, gateway, oif })
}

impl Netlink {
    /// `ip route replace DST via GW dev IDX [onlink]`
    pub async fn replace_route(&self, dst: Ipv4Net, gw: Ipv4Addr, index: u32, onlink: bool) -> Result<()> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .gateway(gw)
            .output_interface(index)
            // As `ip route` and flanneld make them (shown without a `proto`).
            .protocol(RouteProtocol::Boot);
        if onlink {
            b = b.onlink();
        }
        self.handle.route().add(b.build()).replace().execute().await.with_context(|| {
            format!("ip route replace {dst} via {gw} dev {index}{}", if onlink { " onlink" } else { "" })
        })
    }

    /// `ip route del DST dev IDX` (gone already is fine)
    pub async fn del_route(&self, dst: Ipv4Net, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .output_interface(index)
            // Match whatever made the route, as `ip route del` does.
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .build();
        match self.handle.route().del(msg).execute().await {
            Err(e) if !super::is_not_found(&e) => Err(e).with_context(|| format!("ip route del {dst}")),
            _ => Ok(()),
        }
    }

    /// `ip -4 route show table main`
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let mut s = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.context("listing routes")? {
            if m.header.table == 254 {
                out.extend(parse(&m));
            }
        }
        Ok(out)
    }
}
