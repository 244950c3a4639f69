use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo as NlInfo, LinkMessage};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::Netlink;
use crate::types::MacAddr;

/// What the agent needs to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub vxlan: Option<VxlanAttrs>,
}

/// A VXLAN link's settings as the kernel reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub underlay: Option<u32>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
}

fn info(msg: &LinkMessage) -> LinkInfo {
    let mut out = LinkInfo { index: msg.header.index, name: String::new(), mtu: 0, mac: None, vxlan: None };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Mtu(m) => out.mtu = *m,
            LinkAttribute::Address(b) if b.len() == 6 => out.mac = Some(MacAddr(b[..6].try_into().expect("6 bytes"))),
            LinkAttribute::LinkInfo(infos) => out.vxlan = vxlan_info(infos),
            _ => {}
        }
    }
    out
}

fn vxlan_info(infos: &[NlInfo]) -> Option<VxlanAttrs> {
    let is_vxlan = infos.iter().any(|i| matches!(i, NlInfo::Kind(InfoKind::Vxlan)));
    let data = infos.iter().find_map(|i| match i {
        NlInfo::Data(InfoData::Vxlan(d)) => Some(d),
        _ => None,
    })?;
    if !is_vxlan {
        return None;
    }
    let mut v = VxlanAttrs::default();
    for d in data {
        match d {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Local(ip) => v.local = Some(*ip),
            InfoVxlan::Link(l) => v.underlay = Some(*l),
            InfoVxlan::Port(p) => v.port = Some(*p),
            InfoVxlan::Learning(l) => v.learning = Some(*l),
            _ => {}
        }
    }
    Some(v)
}

impl Netlink {
    /// `ip link show NAME`
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut s = self.handle.link().get().match_name(name.to_owned()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(info)),
            Err(e) if super::is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// `ip link show`
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let mut s = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.context("listing links")? {
            out.push(info(&m));
        }
        Ok(out)
    }

    /// `ip link show` (by index)
    pub async fn link_by_index(&self, index: u32) -> Result<LinkInfo> {
        let mut s = self.handle.link().get().match_index(index).execute();
        let m = s.try_next().await.with_context(|| format!("looking up link {index}"))?;
        m.as_ref().map(info).with_context(|| format!("no link {index}"))
    }

    /// The link that holds `ip` (`ip -o addr show to IP`).
    pub async fn link_with_ipv4(&self, ip: Ipv4Addr) -> Result<LinkInfo> {
        let mut s = self.handle.address().get().set_address_filter(IpAddr::V4(ip)).execute();
        while let Some(a) = s.try_next().await.context("listing addresses")? {
            if super::addr::addresses_of(&a).contains(&ip) {
                return self.link_by_index(a.header.index).await;
            }
        }
        bail!("no interface holds the node IP {ip}")
    }

    /// `ip link add NAME type vxlan id VNI local IP dev LINK dstport PORT nolearning`
    /// with `address MAC mtu MTU`, then `ip link set NAME up`. An existing
    /// link with other settings is replaced, one with the same kept.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<LinkInfo> {
        if let Some(l) = self.link_by_name(&spec.name).await? {
            let want = VxlanAttrs {
                vni: spec.vni,
                local: Some(spec.local),
                underlay: Some(spec.underlay),
                port: Some(spec.port),
                learning: Some(false),
            };
            if l.vxlan == Some(want) && l.mac == Some(spec.mac) {
                self.set_mtu_up(l.index, spec.mtu).await?;
                return self.link_by_index(l.index).await;
            }
            self.delete_link(l.index).await?;
        }
        let msg = LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .dev(spec.underlay)
            .port(spec.port)
            .learning(false)
            .address(spec.mac.0.to_vec())
            .mtu(spec.mtu)
            .build();
        self.handle.link().add(msg).execute().await.with_context(|| format!("creating {}", spec.name))?;
        let l =
            self.link_by_name(&spec.name).await?.with_context(|| format!("{} vanished after creation", spec.name))?;
        self.set_mtu_up(l.index, spec.mtu).await?;
        Ok(l)
    }

    /// `ip link set dev IDX mtu MTU up`
    pub async fn set_mtu_up(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).up().build();
        self.handle.link().set(msg).execute().await.with_context(|| format!("setting link {index} up"))
    }

    /// `ip link set dev IDX up`
    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(msg).execute().await.with_context(|| format!("setting link {index} up"))
    }

    /// `ip link del dev IDX`
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle.link().del(index).execute().await.with_context(|| format!("deleting link {index}"))
    }
}

/// A VXLAN device as flannel makes it.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub underlay: u32,
    pub port: u16,
    pub mac: MacAddr,
    pub mtu: u32,
}
