//! flannel's network config at `/coreos.com/network/config`: read as
//! flannel reads it (keys case-insensitive, its defaults), written from the
//! cluster file.

use std::net::Ipv4Addr;

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use crate::config::{Backend, BackendType, NetworkConfig};

pub const CONFIG_KEY: &str = crate::etcd::keys::NETWORK_CONFIG;

/// The effective network: what the agent allocates and routes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: Backend,
    /// `EnableNFTables`: flannel's rules as an nftables table.
    pub nftables: bool,
}

impl Network {
    /// The config the cluster file asks for, with flannel's defaults filled in.
    pub fn from_config(cfg: &NetworkConfig) -> Result<Self> {
        let (min, max) = default_bounds(cfg.network, cfg.subnet_len)?;
        Ok(Network {
            network: cfg.network,
            subnet_len: cfg.subnet_len,
            subnet_min: cfg.subnet_min.unwrap_or(min),
            subnet_max: cfg.subnet_max.unwrap_or(max),
            backend: cfg.backend,
            nftables: cfg.enable_nftables,
        })
    }

    /// flannel's JSON, as `put` into etcd.
    pub fn to_json(cfg: &NetworkConfig) -> String {
        let mut backend = json!({ "Type": cfg.backend.kind.flannel_name() });
        if cfg.backend.kind == BackendType::Vxlan {
            backend["VNI"] = json!(cfg.backend.vni);
            backend["Port"] = json!(cfg.backend.port);
        }
        let mut v = json!({ "Network": cfg.network.to_string(), "SubnetLen": cfg.subnet_len, "Backend": backend });
        if let Some(m) = cfg.subnet_min {
            v["SubnetMin"] = json!(m.to_string());
        }
        if let Some(m) = cfg.subnet_max {
            v["SubnetMax"] = json!(m.to_string());
        }
        if cfg.enable_nftables {
            v["EnableNFTables"] = json!(true);
        }
        v.to_string()
    }

    /// Parses a config as flanneld would (Go's JSON matching is case-insensitive).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).context("network config is not JSON")?;
        let obj = v.as_object().context("network config is not a JSON object")?;
        let network: Ipv4Net = get_str(obj, "Network")?
            .context("network config has no Network")?
            .parse()
            .context("network config: Network is not an IPv4 CIDR")?;
        let subnet_len = match get(obj, "SubnetLen").and_then(Value::as_u64) {
            Some(l) => u8::try_from(l).ok().context("network config: SubnetLen out of range")?,
            // flannel: /24 subnets, or 2 bits more than a network smaller than /22.
            None if network.prefix_len() <= 22 => 24,
            None => network.prefix_len() + 2,
        };
        // Checked whether given or defaulted: a /31 or /32 network defaults
        // to subnets longer than an address has bits.
        if subnet_len > 30 {
            bail!("network config: SubnetLen {subnet_len} is longer than /30 (Network {network})");
        }
        if subnet_len <= network.prefix_len() {
            bail!("network config: SubnetLen {subnet_len} does not fit Network {network}");
        }
        let (dmin, dmax) = default_bounds(network, subnet_len)?;
        let ip = |k: &str, d: Ipv4Addr| -> Result<Ipv4Addr> {
            match get_str(obj, k)? {
                Some(s) => s.parse().with_context(|| format!("network config: {k} is not an IPv4 address")),
                None => Ok(d),
            }
        };
        let backend = parse_backend(obj)?;
        let nftables = match get(obj, "EnableNFTables") {
            None | Some(Value::Null) => false,
            Some(v) => v.as_bool().context("network config: EnableNFTables is not true or false")?,
        };
        let (subnet_min, subnet_max) = (ip("SubnetMin", dmin)?, ip("SubnetMax", dmax)?);
        // As flanneld: a bound outside the network would hand out subnets
        // outside it (the node's own LAN, say).
        for (k, v) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            ensure!(network.contains(&v), "network config: {k} {v} is not in the range of the Network {network}");
        }
        Ok(Network { network, subnet_len, subnet_min, subnet_max, backend, nftables })
    }
}

/// flannel skips the network's first subnet and ends at its last.
fn default_bounds(network: Ipv4Net, len: u8) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let size = 1u32 << (32 - len);
    let first = u32::from(network.network());
    let last = u32::from(network.broadcast()) & !(size - 1);
    if first + size > last {
        bail!("{network} holds too few /{len} subnets");
    }
    Ok((Ipv4Addr::from(first + size), Ipv4Addr::from(last)))
}

fn parse_backend(obj: &Map<String, Value>) -> Result<Backend> {
    let Some(b) = get(obj, "Backend") else {
        bail!(
            "network config has no Backend, which flannel takes as \"udp\"; this agent supports vxlan and host-gw only"
        );
    };
    let b = b.as_object().context("network config: Backend is not an object")?;
    let name = get_str(b, "Type")?.unwrap_or("udp").to_ascii_lowercase();
    let kind: BackendType = name.parse().map_err(|reason| anyhow::anyhow!("network config: Backend.Type: {reason}"))?;
    let num = |k: &str, d: u64| get(b, k).and_then(Value::as_u64).unwrap_or(d);
    let vni = u32::try_from(num("VNI", 1))
        .ok()
        .filter(|v| kind != BackendType::Vxlan || node_config::rules::check_vni(*v).is_ok());
    let vni = vni.with_context(|| format!("network config: VNI {} is not 1 to 16777215", num("VNI", 1)))?;
    let port = u16::try_from(num("Port", 8472)).context("network config: Port out of range")?;
    Ok(Backend { kind, vni, port: if port == 0 { 8472 } else { port } })
}

/// A key matched as Go's encoding/json does: exact first, then case-folded.
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match get(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("network config: {key} is not a string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_outside_the_network_are_refused() {
        for (min, max) in [("172.17.8.0", "10.1.9.0"), ("10.1.1.0", "10.2.0.0")] {
            let cfg = format!(
                r#"{{"Network":"10.1.0.0/16","SubnetLen":24,"SubnetMin":"{min}","SubnetMax":"{max}","Backend":{{"Type":"vxlan"}}}}"#
            );
            let e = Network::parse(cfg.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("is not in the range of the Network 10.1.0.0/16"), "{e}");
        }
    }

    #[test]
    fn reads_flannel_json_case_insensitively() {
        let n = Network::parse(
            br#"{"network":"10.1.0.0/16","subnetlen":24,"backend":{"type":"vxlan","vni":4,"port":4789}}"#,
        )
        .unwrap();
        assert_eq!(n.network.to_string(), "10.1.0.0/16");
        assert_eq!((n.subnet_min.to_string(), n.subnet_max.to_string()), ("10.1.1.0".into(), "10.1.255.0".into()));
        assert_eq!((n.backend.kind, n.backend.vni, n.backend.port), (BackendType::Vxlan, 4, 4789));
        let n = Network::parse(br#"{"Network":"10.1.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!((n.subnet_len, n.backend.kind), (24, BackendType::HostGw));
    }

    /// Found by the fuzzer: a /32 network with no SubnetLen defaulted to
    /// /34 subnets, and computing their bounds overflowed a shift.
    #[test]
    fn refuses_a_network_too_small_for_the_default_subnets() {
        for net in ["10.1.0.0/32", "10.1.0.0/31", "10.1.0.0/29"] {
            let text = format!(r#"{{"Network":"{net}","Backend":{{"Type":"vxlan"}}}}"#);
            let e = Network::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("SubnetLen"), "{net}: {e}");
        }
        // /28 defaults to /30 subnets: the smallest that fits.
        let n = Network::parse(br#"{"Network":"10.1.0.0/28","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(n.subnet_len, 30);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let e = Network::parse(br#"{"Network":"10.1.0.0/16"}"#).unwrap_err().to_string();
        assert!(e.contains("no Backend") && e.contains("udp"), "{e}");
        assert!(Network::parse(br#"{"Network":"10.1.0.0/16","Backend":{"Type":"udp"}}"#).is_err());
        assert!(Network::parse(b"[1]").is_err());
        assert!(Network::parse(br#"{"Network":"10.1.0.0/16","SubnetLen":8,"Backend":{"Type":"vxlan"}}"#).is_err());
    }

    #[test]
    fn writes_flannel_json() {
        let cfg = NetworkConfig {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet_len: 24,
            subnet_min: None,
            subnet_max: None,
            backend: Backend { kind: BackendType::Vxlan, vni: 1, port: 8472 },
            lease_ttl: None,
            enable_nftables: false,
        };
        let text = Network::to_json(&cfg);
        assert_eq!(text, r#"{"Backend":{"Port":8472,"Type":"vxlan","VNI":1},"Network":"10.1.0.0/16","SubnetLen":24}"#);
        assert_eq!(Network::parse(text.as_bytes()).unwrap(), Network::from_config(&cfg).unwrap());
        let nft = NetworkConfig { enable_nftables: true, ..cfg };
        let text = Network::to_json(&nft);
        assert!(text.contains(r#""EnableNFTables":true"#), "{text}");
        assert_eq!(Network::parse(text.as_bytes()).unwrap(), Network::from_config(&nft).unwrap());
    }

    /// flanneld's `EnableNFTables`, read as Go reads it: any case, absent or
    /// null is false, anything but a boolean is an error.
    #[test]
    fn reads_enable_nftables() {
        let parse = |extra: &str| {
            Network::parse(format!(r#"{{"Network":"10.1.0.0/16","Backend":{{"Type":"vxlan"}}{extra}}}"#).as_bytes())
        };
        assert!(!parse("").unwrap().nftables);
        assert!(!parse(r#","EnableNFTables":null"#).unwrap().nftables);
        assert!(parse(r#","EnableNFTables":true"#).unwrap().nftables);
        assert!(parse(r#","enablenftables":true"#).unwrap().nftables);
        let e = parse(r#","EnableNFTables":"yes""#).unwrap_err().to_string();
        assert!(e.contains("EnableNFTables"), "{e}");
    }
}
