use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Problem};
use crate::rules;
use crate::types::{MacAddr, Role};
use crate::Paths;

type Result<T> = std::result::Result<T, Problem>;

/// The largest node config file the agent reads.
pub const MAX_SIZE: u64 = 1 << 20;

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
    /// Set when the agent runs kubelet's container runtime itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<crate::Containerd>,
    /// Set when the agent enforces NetworkPolicy for this node's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyEnforcement>,
}

/// Where NetworkPolicy enforcement keeps its state: the CNI endpoint
/// plugin records each pod in `RUN_DIR/endpoints/` and tells the agent on
/// `RUN_DIR/agent.sock`; `nft` applies the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyEnforcement {
    pub run_dir: std::path::PathBuf,
    pub nft: std::path::PathBuf,
}

impl Default for PolicyEnforcement {
    fn default() -> Self {
        PolicyEnforcement { run_dir: "/run/node-agent/policy".into(), nft: "nft".into() }
    }
}

impl PolicyEnforcement {
    pub fn socket(&self) -> std::path::PathBuf {
        self.run_dir.join("agent.sock")
    }

    pub fn endpoints_dir(&self) -> std::path::PathBuf {
        self.run_dir.join("endpoints")
    }
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
    /// The node IP with the node network's prefix length. With `net.dhcp`
    /// the config has none (`0.0.0.0/0`): the agent fills in what it holds.
    #[serde(default = "unspecified_net", skip_serializing_if = "is_unspecified_net")]
    pub address: Ipv4Net,
    pub mac: MacAddr,
    /// How the node interface is found and addressed beyond `address`.
    #[serde(default, skip_serializing_if = "NodeNet::is_plain")]
    pub net: NodeNet,
}

/// The node interface's addressing: by DHCP, or static with a gateway, DNS
/// servers and an MTU; found by `interface` name instead of the MAC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNet {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

impl NodeNet {
    pub fn is_plain(&self) -> bool {
        *self == NodeNet::default()
    }
}

fn unspecified_net() -> Ipv4Net {
    Ipv4Net::default()
}

fn is_unspecified_net(n: &Ipv4Net) -> bool {
    *n == Ipv4Net::default()
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
    /// Set on etcd nodes of a cluster with client certificates: the etcd
    /// users (certificate CNs) their agent makes before it turns etcd's
    /// authentication on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<EtcdAccess>,
}

/// Who may do what in etcd, by client certificate CN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdAccess {
    /// Full access: the etcd members and the administrator.
    pub admins: Vec<String>,
    /// Nodes with pods: each reads the network config and the policies,
    /// and writes subnet leases, probe addresses and its own policy
    /// endpoints, nothing else.
    pub nodes: Vec<String>,
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
    /// Reads and checks a config file: a regular file of at most
    /// [`MAX_SIZE`] bytes (a node config is a few KB).
    pub fn load(path: &Path) -> std::result::Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            origin: path.display().to_string(),
            problem: Problem::new("(file)", reason),
        };
        let read = |source| ConfigError::Read { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        let mut text = Vec::new();
        std::fs::File::open(path).and_then(|f| f.take(MAX_SIZE + 1).read_to_end(&mut text)).map_err(read)?;
        if text.len() as u64 > MAX_SIZE {
            return Err(invalid(format!("larger than {MAX_SIZE} bytes")));
        }
        Self::parse(&text).map_err(|problem| ConfigError::Invalid { origin: path.display().to_string(), problem })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let cfg: NodeConfig = serde_path_to_error::deserialize(&mut *de)
            .map_err(|e| Problem::new(e.path().to_string(), e.inner().to_string()))?;
        de.end().map_err(|e| Problem::new("(end)", format!("more after the config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The invariants the builder guarantees; a hand-written config may break them.
    pub fn validate(&self) -> Result<()> {
        if !rules::is_plain_name(&self.cluster) {
            refuse!("cluster", "{:?} is not a name (letters, digits, '.', '-', '_')", self.cluster);
        }
        self.validate_node()?;
        self.validate_network()?;
        self.validate_paths()?;
        if self.node.role.has_pods() && self.etcd.endpoints.is_empty() {
            refuse!("etcd.endpoints", "a {} node needs at least one etcd endpoint", self.node.role);
        }
        if self.node.role == Role::Etcd && self.etcd.member.is_none() {
            refuse!("etcd.member", "an etcd node needs its member settings");
        }

        for (i, e) in self.etcd.endpoints.iter().enumerate() {
            rules::check_http_url(e).map_err(|r| Problem::new(format!("etcd.endpoints[{i}]"), r))?;
        }
        self.validate_etcd_tls()?;
        self.validate_member()?;
        self.validate_access()?;
        for s in self.guest.iter().flat_map(|g| &g.services) {
            if !rules::is_plain_name(&s.name) {
                refuse!("guest.services", "{:?} is not a service name (letters, digits, '.', '-', '_')", s.name);
            }
            if s.argv.first().is_none_or(|p| p.is_empty()) || s.argv.iter().any(|a| a.contains('\0')) {
                refuse!("guest.services", "service {:?} needs a program and arguments without NUL", s.name);
            }
        }
        Ok(())
    }

    fn validate_node(&self) -> Result<()> {
        let n = &self.node;
        // Names become file names, hostnames and log fields: no paths, no control bytes.
        if !rules::is_plain_name(&n.name) {
            refuse!(
                "node.name",
                "{:?} is not a name (letters, digits, '.', '-', '_'; not starting with '.' or '-')",
                n.name
            );
        }
        if n.net.dhcp {
            if !is_unspecified_net(&n.address) {
                refuse!("node.address", "a node addressed by DHCP has no static address");
            }
        } else if is_unspecified_net(&n.address) {
            refuse!("node.address", "missing: the node's address, or node.net.dhcp");
        } else {
            rules::check_node_address(n.ip(), n.address.trunc()).map_err(|r| Problem::new("node.address", r))?;
        }
        rules::check_node_net(&n.net, (!n.net.dhcp).then_some(n.address)).map_err(|(f, r)| Problem::new(f, r))?;
        rules::check_mac(n.mac).map_err(|r| Problem::new("node.mac", r))
    }

    fn validate_network(&self) -> Result<()> {
        let net = &self.network;
        let at = |f: &str| format!("network.{f}");
        rules::check_network(net.network).map_err(|r| Problem::new(at("network"), r))?;
        if self.node.net.dhcp {
            // The node's own network is known at boot (the runtime guard checks it then).
            if let Some(what) = rules::special_range(net.network) {
                refuse!(at("network"), "pod network {} overlaps {what}", net.network);
            }
        } else {
            rules::check_pod_network(net.network, self.node.address.trunc())
                .map_err(|r| Problem::new(at("network"), r))?;
        }
        rules::check_subnet_len(net.subnet_len, net.network).map_err(|r| Problem::new(at("subnet_len"), r))?;
        for (field, bound) in [("subnet_min", net.subnet_min), ("subnet_max", net.subnet_max)] {
            if let Some(ip) = bound {
                rules::check_subnet_bound(ip, net.network, net.subnet_len).map_err(|r| Problem::new(at(field), r))?;
            }
        }
        if let (Some(lo), Some(hi)) = (net.subnet_min, net.subnet_max) {
            if lo > hi {
                refuse!(at("subnet_max"), "{hi} is below network.subnet_min {lo}");
            }
        }
        if let Some(ttl) = net.lease_ttl.filter(|t| !rules::LEASE_TTL_RANGE.contains(t)) {
            refuse!(at("lease_ttl"), "{ttl} is not 10 to 9000000000 seconds");
        }
        if net.backend.kind == BackendType::Vxlan {
            rules::check_vni(net.backend.vni).map_err(|r| Problem::new(at("backend.vni"), r))?;
        }
        rules::check_port(net.backend.port, "UDP").map_err(|r| Problem::new(at("backend.port"), r))
    }

    fn validate_paths(&self) -> Result<()> {
        let p = &self.paths;
        let all = [
            ("run_flannel", &p.run_flannel, false),
            ("cni_conf_dir", &p.cni_conf_dir, false),
            ("cni_bin_dir", &p.cni_bin_dir, false),
            ("cni_ipam_dir", &p.cni_ipam_dir, false),
            ("iptables", &p.iptables, true),
            ("state_dir", &p.state_dir, false),
            ("etcd_bin", &p.etcd_bin, false),
            ("etcd_data_dir", &p.etcd_data_dir, false),
            ("proc_cmdline", &p.proc_cmdline, false),
            ("proc_sys", &p.proc_sys, false),
        ];
        for (field, path, command) in all {
            rules::check_path(path, command).map_err(|r| Problem::new(format!("paths.{field}"), r))?;
        }
        if let Some(c) = &self.containerd {
            if !self.node.role.has_pods() {
                refuse!("containerd", "the {} role runs no pods, so no containerd", self.node.role);
            }
            for (field, path, command) in c.paths() {
                rules::check_path(path, command).map_err(|r| Problem::new(format!("containerd.{field}"), r))?;
                if path.as_os_str().len() > 4096 || path.iter().any(|p| p.len() > 255) {
                    refuse!(format!("containerd.{field}"), "longer than a path (4096 bytes, 255 a name)");
                }
                if !command && path.parent().is_none() {
                    refuse!(format!("containerd.{field}"), "must not be / itself");
                }
            }
            if c.config == c.socket {
                refuse!("containerd.socket", "is the same path as containerd.config");
            }
            // containerd listens on SOCKET and SOCKET.ttrpc, and takes unix
            // socket paths of at most 104 bytes.
            if c.socket.as_os_str().len() + ".ttrpc".len() > 104 {
                refuse!(
                    "containerd.socket",
                    "{} is longer than 98 bytes, too long for containerd's sockets",
                    c.socket.display()
                );
            }
        }
        if let Some(p) = &self.policy {
            if !self.node.role.has_pods() {
                refuse!("policy", "the {} role runs no pods, so enforces no policy", self.node.role);
            }
            rules::check_path(&p.run_dir, false).map_err(|r| Problem::new("policy.run_dir", r))?;
            rules::check_path(&p.nft, true).map_err(|r| Problem::new("policy.nft", r))?;
            // The socket's path must fit a sockaddr_un (108 bytes with its NUL).
            if p.socket().as_os_str().len() > 107 {
                refuse!("policy.run_dir", "{} is too long for its socket (96 bytes at most)", p.run_dir.display());
            }
        }
        Ok(())
    }

    /// etcd takes its member settings as flags with comma-separated lists:
    /// names are DNS labels and URLs plain http(s) URLs with no commas, so
    /// nothing can add a member or a listener.
    fn validate_member(&self) -> Result<()> {
        let Some(m) = &self.etcd.member else { return Ok(()) };
        let url = |field: &str, u: &str| -> Result<()> {
            if u.contains(',') {
                refuse!(format!("etcd.member.{field}"), "{u:?} holds a comma");
            }
            rules::check_http_url(u).map_err(|r| Problem::new(format!("etcd.member.{field}"), r))
        };
        for (field, name) in [("name", &m.name), ("initial_cluster_token", &m.initial_cluster_token)] {
            if !rules::is_dns_label(name) {
                refuse!(format!("etcd.member.{field}"), "{name:?} is not a DNS label");
            }
        }
        url("client_url", &m.client_url)?;
        url("peer_url", &m.peer_url)?;
        for (i, entry) in m.initial_cluster.iter().enumerate() {
            let field = format!("initial_cluster[{i}]");
            let Some((name, peer)) = entry.split_once('=') else {
                refuse!(format!("etcd.member.{field}"), "{entry:?} is not NAME=PEER_URL");
            };
            if !rules::is_dns_label(name) {
                refuse!(format!("etcd.member.{field}"), "{name:?} is not a DNS label");
            }
            url(&field, peer)?;
        }
        if !m.initial_cluster.contains(&format!("{}={}", m.name, m.peer_url)) {
            refuse!("etcd.member.initial_cluster", "does not hold this member ({}={})", m.name, m.peer_url);
        }
        Ok(())
    }

    /// etcd's `root` user is nobody's certificate, and a node is never
    /// both an administrator and a node.
    fn validate_access(&self) -> Result<()> {
        let Some(a) = &self.etcd.access else { return Ok(()) };
        if self.etcd.tls.is_none() {
            refuse!("etcd.access", "needs etcd.tls: etcd takes user names from client certificates");
        }
        for (field, names) in [("admins", &a.admins), ("nodes", &a.nodes)] {
            for (i, name) in names.iter().enumerate() {
                let field = format!("etcd.access.{field}[{i}]");
                if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_control() || c == ',') {
                    refuse!(field, "{name:?} is not a certificate name");
                }
                if name == "root" {
                    refuse!(field, "\"root\" is etcd's own administrator, no certificate's name");
                }
            }
        }
        if let Some(n) = a.nodes.iter().find(|n| a.admins.contains(n)) {
            refuse!("etcd.access.nodes", "{n:?} is also an administrator");
        }
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
