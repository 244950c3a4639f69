use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Problem};
use crate::rules;
use crate::types::{MacAddr, Role};
use crate::Paths;

type Result<T> = std::result::Result<T, Problem>;

macro_rules! refuse {
    ($field:expr, $($arg:tt)*) => {
        return Err(Problem::new($field, format!($($arg)*)))
    };
}

/// One node's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The cluster's name, for logs and etcd's initial-cluster token.
    pub cluster: String,
    pub node: NodeIdentity,
    pub etcd: EtcdConfig,
    pub network: NetworkConfig,
    #[serde(default)]
    pub paths: Paths,
    /// Set only in Vagrant boxes: what a Vagrant guest needs besides the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
}

/// What Vagrant needs from a guest: vagrant-libvirt waits for a DHCP lease on
/// its management network, and `vagrant ssh` needs an SSH server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    /// DHCP on every Ethernet link except the node network's.
    #[serde(default)]
    pub dhcp_other_links: bool,
    /// Long-running programs the agent starts, and restarts when they exit.
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// For logs and the service's log file (`STATE_DIR/NAME.log`).
    pub name: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
}

/// Who this node is on the node network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    pub name: String,
    pub role: Role,
    /// The node IP with the node network's prefix length.
    pub address: Ipv4Net,
    pub mac: MacAddr,
}

impl NodeIdentity {
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }
}

/// How to reach etcd, and on etcd nodes how to run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of every etcd member (`https://IP:2379`, or `http://`
    /// when the cluster runs etcd without TLS).
    pub endpoints: Vec<String>,
    /// The cluster CA and this node's client certificate: set when etcd
    /// requires TLS with client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Set on etcd nodes: this node runs a member of a static initial cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<EtcdMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    /// `name=peer_url` for every member, as etcd's `--initial-cluster` wants.
    pub initial_cluster: Vec<String>,
    pub initial_cluster_token: String,
    /// Whether the agent runs etcd itself (in the image) rather than the OS
    /// (Container Linux's etcd-member.service).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supervise: bool,
    /// The member's certificate for clients and peers (both uses), signed by
    /// the CA in `etcd.tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KeyPair>,
}

/// At least one PEM certificate, and nothing unreadable.
fn check_certificates(field: &str, pem: &str) -> Result<()> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Problem::new(field, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        refuse!(field, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it");
    }
    Ok(())
}

fn check_private_key(field: &str, pem: &str) -> Result<()> {
    use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Problem::new(field, format!("no PEM private key: {e}")))?;
    Ok(())
}

/// How the agent proves itself to etcd and knows it is talking to the
/// cluster's etcd: PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The cluster CA certificate, the only root the agent trusts for etcd.
    pub ca: String,
    /// This node's client certificate.
    pub cert: String,
    pub key: String,
}

/// A certificate and its private key (PKCS#8), as PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub cert: String,
    pub key: String,
}

// Never print a private key, even in a debug log.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("ca", &self.ca).field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

/// The flannel network config this cluster puts into etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The pod network (flannel's `Network`).
    pub network: Ipv4Net,
    pub subnet_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<Ipv4Addr>,
    pub backend: Backend,
    /// Subnet lease lifetime in seconds (flannel: 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// flannel's `EnableNFTables`: its rules as an nftables table instead
    /// of iptables chains.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_nftables: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendType {
    Vxlan,
    HostGw,
}

impl BackendType {
    pub const ALL: [BackendType; 2] = [BackendType::Vxlan, BackendType::HostGw];
    /// For error messages: the names [`BackendType::from_str`] accepts.
    pub const EXPECTED: &'static str = "\"vxlan\" or \"host-gw\"";

    /// The name flannel uses in `Backend.Type` and `BackendType`.
    pub fn flannel_name(self) -> &'static str {
        match self {
            BackendType::Vxlan => "vxlan",
            BackendType::HostGw => "host-gw",
        }
    }
}

impl std::fmt::Display for BackendType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.flannel_name())
    }
}

/// flannel's names, exactly (its Go side lower-cases first; callers that
/// read flannel's JSON do the same).
impl std::str::FromStr for BackendType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        BackendType::ALL
            .into_iter()
            .find(|b| b.flannel_name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (expected {})", BackendType::EXPECTED))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[serde(rename = "type")]
    pub kind: BackendType,
    pub vni: u32,
    pub port: u16,
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> std::result::Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|problem| ConfigError::Invalid { origin: path.display().to_string(), problem })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let cfg: NodeConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| Problem::new(e.path().to_string(), e.inner().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The invariants the builder guarantees; a hand-written config may break them.
    pub fn validate(&self) -> Result<()> {
        let net = &self.network;
        rules::check_subnet_len(net.subnet_len, net.network).map_err(|r| Problem::new("network.subnet_len", r))?;
        if self.node.role.has_pods() && self.etcd.endpoints.is_empty() {
            refuse!("etcd.endpoints", "a {} node needs at least one etcd endpoint", self.node.role);
        }
        if self.node.role == Role::Etcd && self.etcd.member.is_none() {
            refuse!("etcd.member", "an etcd node needs its member settings");
        }
        // Names become file names and log fields: no paths, no control bytes.
        if !rules::is_plain_name(&self.node.name) {
            refuse!(
                "node.name",
                "{:?} is not a name (letters, digits, '.', '-', '_'; not starting with '.' or '-')",
                self.node.name
            );
        }
        for (i, e) in self.etcd.endpoints.iter().enumerate() {
            rules::check_http_url(e).map_err(|r| Problem::new(format!("etcd.endpoints[{i}]"), r))?;
        }
        self.validate_etcd_tls()?;
        for s in self.guest.iter().flat_map(|g| &g.services) {
            if !rules::is_plain_name(&s.name) {
                refuse!("guest.services", "{:?} is not a service name (letters, digits, '.', '-', '_')", s.name);
            }
            if s.argv.is_empty() {
                refuse!("guest.services", "service {:?} has an empty argv", s.name);
            }
        }
        if net.backend.kind == BackendType::Vxlan {
            rules::check_vni(net.backend.vni).map_err(|r| Problem::new("network.backend.vni", r))?;
        }
        rules::check_port(net.backend.port, "UDP").map_err(|r| Problem::new("network.backend.port", r))?;
        Ok(())
    }

    /// TLS material and URL schemes agree: with certificates, https only, so
    /// a node never sends etcd traffic in the clear by a typo. Without them,
    /// https is still allowed (server-only TLS, trusted by the web's roots,
    /// as flanneld allows).
    fn validate_etcd_tls(&self) -> Result<()> {
        let etcd = &self.etcd;
        if let Some(t) = &etcd.tls {
            if let Some(e) = etcd.endpoints.iter().find(|e| !e.starts_with("https://")) {
                refuse!("etcd.endpoints", "{e:?} must start with https:// (etcd.tls is set)");
            }
            check_certificates("etcd.tls.ca", &t.ca)?;
            check_certificates("etcd.tls.cert", &t.cert)?;
            check_private_key("etcd.tls.key", &t.key)?;
        }
        let Some(m) = &etcd.member else { return Ok(()) };
        if let Some(pair) = &m.tls {
            check_certificates("etcd.member.tls.cert", &pair.cert)?;
            check_private_key("etcd.member.tls.key", &pair.key)?;
        }
        if m.tls.is_some() && etcd.tls.is_none() {
            refuse!("etcd.member.tls", "a member certificate needs the cluster CA in etcd.tls");
        }
        let peers = m.initial_cluster.iter().filter_map(|p| p.split_once('=').map(|(_, url)| url));
        let urls = [m.client_url.as_str(), m.peer_url.as_str()].into_iter().chain(peers);
        for url in urls {
            if m.tls.is_some() != url.starts_with("https://") {
                let why = if m.tls.is_some() { "etcd.member.tls is set" } else { "etcd.member.tls is not set" };
                refuse!("etcd.member", "{url:?} must use {} ({why})", if m.tls.is_some() { "https" } else { "http" });
            }
        }
        Ok(())
    }
}
