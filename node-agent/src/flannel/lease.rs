//! Subnet leases exactly as flanneld (≥ v0.18) writes them:
//! key `/coreos.com/network/subnets/A.B.C.D-LEN`, value
//! `{"PublicIP":…,"PublicIPv6":null,"BackendType":…,"BackendData":…}`.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::config::get;
use crate::types::MacAddr;

pub const SUBNETS_PREFIX: &str = crate::etcd::keys::SUBNETS;

/// What a lease says about its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub backend: BackendData,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendData {
    Vxlan {
        vni: u32,
        vtep_mac: MacAddr,
    },
    HostGw,
    /// Another backend (udp, wireguard, …): listed, never routed.
    Other(String),
}

/// A lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to (0: none).
    pub etcd_lease: i64,
}

pub fn key(subnet: Ipv4Net) -> String {
    format!("{SUBNETS_PREFIX}{}-{}", subnet.addr(), subnet.prefix_len())
}

/// `/coreos.com/network/subnets/10.1.5.0-24` → 10.1.5.0/24.
pub fn parse_key(key: &str) -> Result<Ipv4Net> {
    let rest = key.strip_prefix(SUBNETS_PREFIX).with_context(|| format!("{key:?} is not a subnet key"))?;
    let (ip, len) = rest.rsplit_once('-').with_context(|| format!("{key:?} is not A.B.C.D-LEN"))?;
    let net = Ipv4Net::new(ip.parse().context("bad subnet address")?, len.parse().context("bad subnet length")?)
        .with_context(|| format!("{key:?}: bad prefix length"))?;
    if net.trunc() != net {
        bail!("{key:?} is not a subnet address");
    }
    Ok(net)
}

impl LeaseAttrs {
    /// The value flanneld writes, field for field.
    pub fn to_json(&self) -> String {
        let (kind, data) = match &self.backend {
            BackendData::Vxlan { vni, vtep_mac } => ("vxlan", json!({ "VNI": vni, "VtepMAC": vtep_mac.to_string() })),
            BackendData::HostGw => ("host-gw", Value::Null),
            BackendData::Other(k) => (k.as_str(), Value::Null),
        };
        // Field order matters to byte-for-byte readers: build it by hand.
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"{kind}","BackendData":{}}}"#,
            self.public_ip, data
        )
    }

    /// Reads a value written by us or by flanneld; keys case-insensitive.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).context("lease is not JSON")?;
        let obj = v.as_object().context("lease is not a JSON object")?;
        let public_ip = get(obj, "PublicIP")
            .and_then(Value::as_str)
            .context("lease has no PublicIP")?
            .parse()
            .context("lease PublicIP is not an IPv4 address")?;
        let kind = get(obj, "BackendType").and_then(Value::as_str).unwrap_or("udp").to_ascii_lowercase();
        let backend = match kind.as_str() {
            "vxlan" => {
                let data =
                    get(obj, "BackendData").and_then(Value::as_object).context("vxlan lease has no BackendData")?;
                let vni = get(data, "VNI").and_then(Value::as_u64).unwrap_or(1);
                let mac = get(data, "VtepMAC").and_then(Value::as_str).context("vxlan lease has no VtepMAC")?;
                BackendData::Vxlan {
                    vni: u32::try_from(vni).context("lease VNI out of range")?,
                    vtep_mac: mac.parse().map_err(|e: String| anyhow::anyhow!("lease VtepMAC: {e}"))?,
                }
            }
            "host-gw" => BackendData::HostGw,
            other => BackendData::Other(other.to_owned()),
        };
        Ok(LeaseAttrs { public_ip, backend })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let net: Ipv4Net = "10.1.5.0/24".parse().unwrap();
        assert_eq!(key(net), "/coreos.com/network/subnets/10.1.5.0-24");
        assert_eq!(parse_key(&key(net)).unwrap(), net);
        assert!(parse_key("/coreos.com/network/subnets/10.1.5.1-24").is_err());
        assert!(parse_key("/coreos.com/network/config").is_err());
        assert!(parse_key("/coreos.com/network/subnets/x-24").is_err());
    }

    #[test]
    fn value_is_flannels_byte_for_byte() {
        let attrs = LeaseAttrs {
            public_ip: "172.17.8.103".parse().unwrap(),
            backend: BackendData::Vxlan { vni: 1, vtep_mac: "52:54:00:aa:bb:cc".parse().unwrap() },
        };
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"172.17.8.103","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"52:54:00:aa:bb:cc"}}"#
        );
        assert_eq!(LeaseAttrs::parse(attrs.to_json().as_bytes()).unwrap(), attrs);
    }

    #[test]
    fn reads_what_flanneld_writes() {
        // flanneld v0.2x on a dual-stack-capable build.
        let v = br#"{"PublicIP":"172.17.8.110","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"6E:24:CF:11:72:9A"},"BackendV6Data":null}"#;
        let a = LeaseAttrs::parse(v).unwrap();
        assert_eq!(a.backend, BackendData::Vxlan { vni: 1, vtep_mac: "6e:24:cf:11:72:9a".parse().unwrap() });
        let hg = LeaseAttrs::parse(br#"{"PublicIP":"172.17.8.111","BackendType":"host-gw"}"#).unwrap();
        assert_eq!(hg.backend, BackendData::HostGw);
        assert!(LeaseAttrs::parse(br#"{"BackendType":"vxlan"}"#).is_err());
        assert!(LeaseAttrs::parse(b"garbage").is_err());
    }
}
