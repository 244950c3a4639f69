//! The cluster file and the node config are held to the same rules
//! (`node_config::rules`): a value one accepts, the other accepts; a value
//! one refuses, the other refuses. Each case builds both from one value.

use imgbuild::cluster::{self, DEFAULT_TOML};
use imgbuild::plan::node_config;
use node_config::NodeConfig;
use serde_json::Value;

/// The reference cluster without TLS (node configs then need no keys).
fn plain_toml() -> String {
    DEFAULT_TOML.replace("tls = true", "tls = false")
}

fn cluster_accepts(text: &str) -> Result<(), String> {
    cluster::parse(text, "contract.toml").map(|_| ()).map_err(|e| e.to_string())
}

/// A worker's node config from the plain reference cluster, with `edit`
/// applied to its JSON.
fn node_config_accepts(edit: impl FnOnce(&mut Value)) -> Result<(), String> {
    let c = cluster::parse(&plain_toml(), "contract.toml").unwrap();
    let worker = c.nodes.iter().find(|n| n.name == "worker-1").unwrap();
    let mut v = serde_json::to_value(node_config(&c, worker, None)).unwrap();
    edit(&mut v);
    NodeConfig::parse(v.to_string().as_bytes()).map(|_| ()).map_err(|e| e.to_string())
}

fn agree(what: &str, cluster: Result<(), String>, node: Result<(), String>) {
    assert_eq!(cluster.is_ok(), node.is_ok(), "{what}: cluster file says {cluster:?}, node config says {node:?}");
}

#[test]
fn vnis() {
    for vni in [0u32, 1, 4096, 0x00ff_ffff, 0x0100_0000, u32::MAX] {
        let toml = plain_toml().replace("vni = 1", &format!("vni = {vni}"));
        let node = node_config_accepts(|v| v["network"]["backend"]["vni"] = vni.into());
        agree(&format!("vni {vni}"), cluster_accepts(&toml), node);
    }
}

#[test]
fn subnet_lengths() {
    for len in [0u8, 8, 16, 17, 24, 30, 31, 32] {
        let toml = plain_toml().replace("subnet_len = 24", &format!("subnet_len = {len}"));
        let node = node_config_accepts(|v| v["network"]["subnet_len"] = len.into());
        agree(&format!("subnet_len {len}"), cluster_accepts(&toml), node);
    }
}

#[test]
fn backend_names_and_ports() {
    for name in ["vxlan", "host-gw", "udp", "VXLAN", "hostgw", ""] {
        let toml = plain_toml().replace("type = \"vxlan\"", &format!("type = {name:?}"));
        let node = node_config_accepts(|v| v["network"]["backend"]["type"] = name.into());
        agree(&format!("backend {name:?}"), cluster_accepts(&toml), node);
    }
    for port in [0u16, 1, 8472, 65535] {
        let toml = plain_toml().replace("port = 8472", &format!("port = {port}"));
        let node = node_config_accepts(|v| v["network"]["backend"]["port"] = port.into());
        agree(&format!("backend port {port}"), cluster_accepts(&toml), node);
    }
}

/// External etcd endpoints. Only `http://` shapes are compared: a cluster
/// file without TLS asks for http, while a node config without client
/// certificates may still name an https server (as flanneld allows).
#[test]
fn etcd_endpoint_urls() {
    let no_etcd_node =
        plain_toml().replace("[[node]]\nname = \"etcd-1\"\nrole = \"etcd\"\nip = \"172.17.8.101\"\n", "");
    assert_ne!(no_etcd_node, plain_toml(), "the reference cluster's etcd node moved");
    for url in [
        "http://10.0.0.5:2379",
        "http://etcd.internal:2379",
        "http://[fd00::5]:2379",
        "http://user:secret@10.0.0.5:2379",
        "http://",
        "http:// 10.0.0.5:2379",
        "http://10.0.0.5:2379\nExecStart=/bin/sh",
        "10.0.0.5:2379",
        "unix:///run/etcd.sock",
    ] {
        let toml = no_etcd_node.replace("[etcd]\n", &format!("[etcd]\nendpoints = [{}]\n", toml_string(url)));
        let node = node_config_accepts(|v| v["etcd"]["endpoints"] = vec![url].into());
        agree(&format!("endpoint {url:?}"), cluster_accepts(&toml), node);
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn macs_and_node_addresses() {
    for mac in ["52:54:00:13:02:9f", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "02:00:00:00:00:01"]
    {
        let toml = plain_toml().replace("ip = \"172.17.8.103\"", &format!("ip = \"172.17.8.103\"\nmac = \"{mac}\""));
        let node = node_config_accepts(|v| v["node"]["mac"] = mac.into());
        agree(&format!("mac {mac}"), cluster_accepts(&toml), node);
    }
    for ip in ["172.17.8.103", "172.17.8.0", "172.17.8.255", "172.17.8.254"] {
        let toml = plain_toml().replace("ip = \"172.17.8.103\"", &format!("ip = \"{ip}\""));
        let node = node_config_accepts(|v| v["node"]["address"] = format!("{ip}/24").into());
        agree(&format!("node ip {ip}"), cluster_accepts(&toml), node);
    }
}

#[test]
fn subnet_bounds() {
    for (min, max) in
        [("10.1.1.0", "10.1.9.0"), ("10.9.0.0", "10.1.9.0"), ("10.1.1.5", "10.1.9.0"), ("10.1.9.0", "10.1.2.0")]
    {
        let toml = plain_toml()
            .replace("subnet_len = 24", &format!("subnet_len = 24\nsubnet_min = \"{min}\"\nsubnet_max = \"{max}\""));
        let node = node_config_accepts(|v| {
            v["network"]["subnet_min"] = min.into();
            v["network"]["subnet_max"] = max.into();
        });
        agree(&format!("subnet_min {min} subnet_max {max}"), cluster_accepts(&toml), node);
    }
}
