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
    #[serde(default, skip_serializing_if = "IgnitionSection::is_empty")]
    pub ignition: IgnitionSection,
    #[serde(default, skip_serializing_if = "AccessSection::is_empty")]
    pub access: AccessSection,
    #[serde(default, skip_serializing_if = "ImagesSection::is_empty")]
    pub images: ImagesSection,
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeEntry>,
}

/// Ignition configs of the user's to merge into every node's, a role's, or
/// (on a `[[node]]`) one node's: paths relative to the cluster file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IgnitionSection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub roles: std::collections::BTreeMap<String, RoleIgnition>,
}

impl IgnitionSection {
    fn is_empty(&self) -> bool {
        self.merge.is_empty() && self.roles.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleIgnition {
    #[serde(default)]
    pub merge: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// OpenSSH public keys for Flatcar's `core` user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

impl AccessSection {
    fn is_empty(&self) -> bool {
        self.ssh_authorized_keys.is_empty()
    }
}

/// What the images carry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSection {
    /// A driver set's name (`virtio`, `cloud`, `hardware`) or a list of
    /// module names; checked by hand for a precise error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<toml::Value>,
    /// Workers' and masters' images carry kubelet's runtime (containerd,
    /// runc); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<bool>,
}

impl ImagesSection {
    fn is_empty(&self) -> bool {
        self.drivers.is_none() && self.containerd.is_none()
    }
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
    /// Kubernetes NetworkPolicy enforced by the agent on nodes with pods
    /// (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<bool>,
    /// Every node's addressing, unless its `[[node]]` says otherwise:
    /// `ip = "dhcp"`, or a static node's `gateway`, `dns` and `mtu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
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
    /// Refused by validation (the images run no kubelet), with our message.
    pub kubelet: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub role: String,
    /// An IPv4 address in the node network, or `dhcp`; default `[network] ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The node's interface by name, instead of by `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The machine's SMBIOS UUID, by which `serve` also finds the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Ignition configs to merge into this node's only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge: Vec<String>,
    /// This node's drivers, overriding `images.drivers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<toml::Value>,
}
