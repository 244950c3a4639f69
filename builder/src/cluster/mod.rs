//! The cluster file: schema, embedded default, and validation into a typed
//! model. No I/O beyond reading the file and the Ignition fragments it names.

pub mod fragments;
mod schema;
mod validate;

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use node_config::Backend;
use node_config::{MacAddr, NodeNet, Role};
use sha2::{Digest, Sha256};

use crate::error::InputError;
use crate::sources::SourceSpec;
pub use schema::ClusterFile;

/// The reference cluster, as shipped.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// How errors name the embedded default.
pub const DEFAULT_ORIGIN: &str = "<embedded default cluster>";

/// A validated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub node_network: Ipv4Net,
    pub pod_network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Option<Ipv4Addr>,
    pub subnet_max: Option<Ipv4Addr>,
    pub backend: Backend,
    /// flannel's rules as an nftables table (`EnableNFTables`).
    pub enable_nftables: bool,
    /// Workers' and masters' images run containerd (`images.containerd`).
    pub containerd: bool,
    /// Nodes with pods enforce NetworkPolicy (`network.policy`).
    pub network_policy: bool,
    pub etcd: EtcdSettings,
    pub artifacts: Artifacts,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// External etcd client URLs; empty when the cluster's etcd nodes serve.
    pub external_endpoints: Vec<String>,
    pub client_port: u16,
    pub peer_port: u16,
    /// etcd with TLS and client certificates from the cluster CA.
    pub tls: bool,
}

impl EtcdSettings {
    /// The URL scheme of every etcd client and peer URL.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Artifacts {
    pub kernel: Option<SourceSpec>,
    pub etcd: Option<SourceSpec>,
    pub cni: Option<SourceSpec>,
}

impl Artifacts {
    /// Local sources (folders, .deb files) are there, checked before a build
    /// writes or downloads anything; `origin` is the cluster file.
    pub fn check_local(&self, origin: &str) -> Result<(), InputError> {
        let all = [("kernel", &self.kernel), ("etcd", &self.etcd), ("cni", &self.cni)];
        for (name, spec) in all {
            if let Some(spec) = spec {
                spec.check_local().map_err(|r| InputError::new(origin, format!("artifacts.{name}"), r))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// The static address; `None` when the node takes one by DHCP.
    pub ip: Option<Ipv4Addr>,
    pub mac: MacAddr,
    /// DHCP, or the static address's gateway, DNS and MTU; the interface by name.
    pub net: NodeNet,
    /// The machine's SMBIOS UUID (lowercase), if the cluster file gives it.
    pub uuid: Option<String>,
    /// What the user adds to this node's Ignition config.
    pub ignition: NodeIgnition,
    /// The device drivers its image carries.
    pub drivers: Drivers,
    /// The field `drivers` came from (`images.drivers`, `node[I].drivers`),
    /// for errors found once the kernel is known.
    pub drivers_field: String,
}

impl Node {
    /// The address of a node that must have a static one (etcd members:
    /// validation refuses DHCP for them).
    pub fn static_ip(&self) -> Ipv4Addr {
        self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// A node image's device drivers: a named set (`images/drivers.toml`) or
/// the user's own list of module names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drivers {
    Set(DriverSet),
    Modules(Vec<String>),
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers::Set(DriverSet::Virtio)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DriverSet {
    Virtio,
    Cloud,
    Hardware,
}

impl DriverSet {
    pub const ALL: [DriverSet; 3] = [DriverSet::Virtio, DriverSet::Cloud, DriverSet::Hardware];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverSet::Virtio => "virtio",
            DriverSet::Cloud => "cloud",
            DriverSet::Hardware => "hardware",
        }
    }
}

impl std::str::FromStr for DriverSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DriverSet::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a driver set (virtio, cloud, hardware) or a list of module names"))
    }
}

/// The user's additions to a node's Ignition config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIgnition {
    /// To merge, in order: every node's, the role's, the node's own.
    pub merge: Vec<fragments::Fragment>,
    /// For Flatcar's `core` user.
    pub ssh_authorized_keys: Vec<String>,
}

impl Cluster {
    /// The embedded reference cluster.
    pub fn embedded_default() -> Self {
        parse(DEFAULT_TOML, DEFAULT_ORIGIN).expect("the embedded default cluster is valid")
    }

    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| InputError::new(&origin, "", format!("cannot read: {e}")))?;
        parse(&text, &origin)
    }

    pub fn etcd_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Etcd)
    }

    /// The etcd client URLs every agent uses.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        if !self.etcd.external_endpoints.is_empty() {
            return self.etcd.external_endpoints.clone();
        }
        self.etcd_nodes()
            .map(|n| format!("{}://{}:{}", self.etcd.scheme(), n.static_ip(), self.etcd.client_port))
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The file again, with every MAC spelled out (what `imgbuild init` writes).
    pub fn to_toml(&self, file: &ClusterFile) -> String {
        let mut file = file.clone();
        for (entry, node) in file.nodes.iter_mut().zip(&self.nodes) {
            entry.mac = Some(node.mac.to_string());
        }
        let body = toml::to_string_pretty(&file).expect("the cluster schema always serializes");
        format!("# imgbuild cluster file. Every node's MAC is spelled out; edit freely.\n\n{body}")
    }
}

/// Parses and validates cluster file text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Cluster, InputError> {
    let file = parse_file(text, origin)?;
    validate::validate(&file, origin)
}

/// Parses the text into the file schema (no validation beyond types and keys).
pub fn parse_file(text: &str, origin: &str) -> Result<ClusterFile, InputError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut reason = inner.message().trim().replace('\n', "; ");
        if let Some(span) = inner.span() {
            let line = text[..span.start].matches('\n').count() + 1;
            reason = format!("{reason} (line {line})");
        }
        InputError::new(origin, field_of(&path, &reason), reason)
    })
}

/// serde reports a missing or unknown key at its parent table; name the key.
fn field_of(path: &str, reason: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let key = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| reason.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (parent, key) {
        (p, Some(k)) if p == k || p.ends_with(&format!(".{k}")) => p.to_owned(),
        ("", Some(k)) => k.to_owned(),
        (p, Some(k)) => format!("{p}.{k}"),
        (p, None) => p.to_owned(),
    }
}

/// A stable MAC for a node without one: QEMU's 52:54:00 prefix and three
/// bytes of the name's sha256, so it never changes between builds.
pub fn derived_mac(name: &str) -> MacAddr {
    let h = Sha256::digest(name.as_bytes());
    MacAddr([0x52, 0x54, 0x00, h[0], h[1], h[2]])
}

#[cfg(test)]
mod tests;
