//! flannel's host-gw backend: per remote lease, `<subnet> via PublicIP dev
//! <node interface>` — nodes must share an L2 segment.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::flannel::Lease;
use crate::netlink::{LinkInfo, Netlink};

pub struct HostGw {
    nl: Netlink,
    pub node: LinkInfo,
    pub node_ip: Ipv4Addr,
}

impl HostGw {
    pub fn new(nl: Netlink, node: LinkInfo, node_ip: Ipv4Addr) -> Self {
        HostGw { nl, node, node_ip }
    }

    pub async fn add(&self, lease: &Lease) -> Result<()> {
        self.nl.replace_route(lease.subnet, lease.attrs.public_ip, self.node.index, false).await
    }

    pub async fn remove(&self, lease: &Lease) -> Result<()> {
        self.nl.del_route(lease.subnet, self.node.index).await
    }
}
