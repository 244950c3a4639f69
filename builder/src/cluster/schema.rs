//! The cluster file exactly as written: strings where we want to give our own
//! precise error, typed values where serde's message is already clear.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default)]
    pub cluster: ClusterSection,
    pub network: NetworkSection,
    #[serde(default)]
    pub backend: BackendSection,
    #[serde(default)]
    pub etcd: EtcdSection,
    #[serde(default)]
    pub artifacts: ArtifactsSection,
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection { name: "imgbuild".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// The node network, e.g. `172.17.8.0/24`.
    pub nodes: String,
    /// The pod network (flannel's `Network`).
    pub pods: String,
    pub subnet_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<String>,
    /// flannel's `EnableNFTables`: its rules as an nftables table, not
    /// iptables chains.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_nftables: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
}

fn default_vni() -> u32 {
    1
}

fn default_vxlan_port() -> u16 {
    8472
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection { kind: "vxlan".into(), vni: default_vni(), port: default_vxlan_port() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Client URLs of an etcd outside this cluster file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(default = "default_client_port")]
    pub client_port: u16,
    #[serde(default = "default_peer_port")]
    pub peer_port: u16,
    /// TLS with client certificates from the cluster CA; `false` runs etcd
    /// over plain HTTP, for networks where that is acceptable.
    #[serde(default = "default_tls")]
    pub tls: bool,
}

fn default_tls() -> bool {
    true
}

fn default_client_port() -> u16 {
    2379
}

fn default_peer_port() -> u16 {
    2380
}

impl Default for EtcdSection {
    fn default() -> Self {
        EtcdSection {
            endpoints: Vec::new(),
            client_port: default_client_port(),
            peer_port: default_peer_port(),
            tls: default_tls(),
        }
    }
}

/// Each value is a source: a folder, a `.deb`, `apt:PACKAGE`, or a table
/// `{ url = "https://…", sha256 = "…" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub role: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}
