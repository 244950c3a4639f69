//! From the file as written to a `Cluster`, refusing every value we cannot
//! build a working cluster from. Each check names the field it refuses.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use node_config::rules;
use node_config::{Backend, BackendType, MacAddr, NodeNet, Role};

use super::schema::{ArtifactsSection, ClusterFile, EtcdSection, NetworkSection, NodeEntry};
use super::{derived_mac, fragments, Artifacts, Cluster, Drivers, EtcdSettings, Node};
use crate::error::InputError;
use crate::sources::SourceSpec;

type Result<T> = std::result::Result<T, InputError>;

/// Builds errors that all name the same file.
struct Errs<'a>(&'a str);

impl Errs<'_> {
    fn at(&self, field: impl Into<String>, reason: impl Into<String>) -> InputError {
        InputError::new(self.0, field, reason)
    }
}

pub fn validate(file: &ClusterFile, origin: &str) -> Result<Cluster> {
    let errs = Errs(origin);
    check_name(&errs, "cluster.name", &file.cluster.name)?;
    let net = &file.network;
    let node_network = cidr(&errs, "network.nodes", &net.nodes)?;
    let pod_network = cidr(&errs, "network.pods", &net.pods)?;
    if node_network.contains(&pod_network) || pod_network.contains(&node_network) {
        return Err(errs.at("network.pods", format!("{pod_network} overlaps the node network {node_network}")));
    }
    // The agent refuses the same from etcd (flannel::guard): one rule.
    rules::check_pod_network(pod_network, node_network).map_err(|r| errs.at("network.pods", r))?;
    if let Some(what) = rules::special_range(node_network) {
        return Err(errs.at("network.nodes", format!("{node_network} overlaps {what}")));
    }
    check_subnet_len(&errs, net, pod_network)?;
    let subnet_min = subnet_bound(&errs, "network.subnet_min", net.subnet_min.as_deref(), pod_network, net.subnet_len)?;
    let subnet_max = subnet_bound(&errs, "network.subnet_max", net.subnet_max.as_deref(), pod_network, net.subnet_len)?;
    if let (Some(lo), Some(hi)) = (subnet_min, subnet_max) {
        if lo > hi {
            return Err(errs.at("network.subnet_max", format!("{hi} is below network.subnet_min {lo}")));
        }
    }
    let backend = backend(&errs, file)?;
    let mut nodes = nodes(&errs, file, node_network)?;
    add_ignition(&errs, file, &mut nodes)?;
    add_drivers(&errs, file, &mut nodes)?;
    let etcd = etcd(&errs, &file.etcd, &nodes)?;
    let artifacts = artifacts(&errs, &file.artifacts)?;
    Ok(Cluster {
        name: file.cluster.name.clone(),
        node_network,
        pod_network,
        subnet_len: net.subnet_len,
        subnet_min,
        subnet_max,
        backend,
        enable_nftables: net.enable_nftables,
        containerd: file.images.containerd.unwrap_or(true),
        network_policy: net.policy.unwrap_or(true),
        etcd,
        artifacts,
        nodes,
    })
}

/// Names become hostnames, file names and etcd member names: DNS labels only.
fn check_name(errs: &Errs, field: &str, name: &str) -> Result<()> {
    if rules::is_dns_label(name) {
        Ok(())
    } else {
        Err(errs.at(field, format!("{name:?} is not a valid name (lower-case letters, digits and '-', at most 63, not starting or ending with '-')")))
    }
}

fn cidr(errs: &Errs, field: &str, s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| errs.at(field, format!("{s:?} is not an IPv4 CIDR like 10.1.0.0/16")))?;
    rules::check_network(net).map_err(|r| errs.at(field, r))?;
    Ok(net)
}

fn check_subnet_len(errs: &Errs, net: &NetworkSection, pods: Ipv4Net) -> Result<()> {
    rules::check_subnet_len(net.subnet_len, pods).map_err(|r| errs.at("network.subnet_len", r))
}

/// `subnet_min`/`subnet_max` as flannel takes them: subnet addresses inside
/// the pod network, aligned to the subnet length.
fn subnet_bound(errs: &Errs, field: &str, s: Option<&str>, pods: Ipv4Net, len: u8) -> Result<Option<Ipv4Addr>> {
    let Some(s) = s else { return Ok(None) };
    let ip: Ipv4Addr = s.parse().map_err(|_| errs.at(field, format!("{s:?} is not an IPv4 address")))?;
    rules::check_subnet_bound(ip, pods, len).map_err(|r| errs.at(field, r))?;
    Ok(Some(ip))
}

fn backend(errs: &Errs, file: &ClusterFile) -> Result<Backend> {
    let b = &file.backend;
    let kind: BackendType = b.kind.parse().map_err(|r: String| errs.at("backend.type", r))?;
    if kind == BackendType::Vxlan {
        rules::check_vni(b.vni).map_err(|r| errs.at("backend.vni", r))?;
    }
    rules::check_port(b.port, "UDP").map_err(|r| errs.at("backend.port", r))?;
    Ok(Backend { kind, vni: b.vni, port: b.port })
}

fn nodes(errs: &Errs, file: &ClusterFile, node_network: Ipv4Net) -> Result<Vec<Node>> {
    let entries = &file.nodes;
    if entries.is_empty() {
        return Err(errs.at("node", "the cluster has no nodes (add [[node]] tables)"));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let node = node(errs, i, e, &file.network, node_network)?;
        let keys = [
            ("name", Some(node.name.clone())),
            ("ip", node.ip.map(|ip| ip.to_string())),
            ("mac", Some(node.mac.to_string())),
        ];
        for (what, key) in keys.into_iter().chain([("uuid", node.uuid.clone())]).filter_map(|(w, k)| Some((w, k?))) {
            if let Some(first) = seen.insert(format!("{what}={key}"), i) {
                return Err(errs.at(format!("node[{i}].{what}"), format!("{key} is already used by node[{first}]")));
            }
        }
        out.push(node);
    }
    Ok(out)
}

fn node(errs: &Errs, i: usize, e: &NodeEntry, all: &NetworkSection, node_network: Ipv4Net) -> Result<Node> {
    let field = |f: &str| format!("node[{i}].{f}");
    check_name(errs, &field("name"), &e.name)?;
    if e.name == "root" {
        // A node's certificate CN is its name, and etcd's user "root" has every right.
        return Err(errs.at(field("name"), "\"root\" is etcd's administrator: name the node otherwise"));
    }
    let role: Role = e.role.parse().map_err(|m: String| errs.at(field("role"), m))?;
    let (ip, net) = addressing(errs, i, e, all, node_network)?;
    if ip.is_none() && role == Role::Etcd {
        return Err(errs.at(
            if e.ip.is_some() { field("ip") } else { "network.ip".into() },
            format!("etcd member {} needs a static address: its peers and certificates name it", e.name),
        ));
    }
    let mac = match &e.mac {
        Some(m) => m.parse::<MacAddr>().map_err(|r| errs.at(field("mac"), r))?,
        None => derived_mac(&e.name),
    };
    rules::check_mac(mac).map_err(|r| errs.at(field("mac"), r))?;
    let uuid = e.uuid.as_deref().map(rules::parse_uuid).transpose().map_err(|r| errs.at(field("uuid"), r))?;
    Ok(Node {
        name: e.name.clone(),
        role,
        ip,
        net,
        mac,
        uuid,
        ignition: Default::default(),
        drivers: Drivers::default(),
        drivers_field: String::new(),
    })
}

/// A node's address (None: DHCP) and the rest of its addressing: its own
/// keys, else `[network]`'s; refused where it cannot work, naming the key
/// as written.
fn addressing(
    errs: &Errs,
    i: usize,
    e: &NodeEntry,
    all: &NetworkSection,
    node_network: Ipv4Net,
) -> Result<(Option<Ipv4Addr>, NodeNet)> {
    let own = |f: &str| format!("node[{i}].{f}");
    // The value and the field it came from.
    let pick = |mine: bool, f: &str| if mine { own(f) } else { format!("network.{f}") };
    let (ip_text, ip_field) = match (&e.ip, &all.ip) {
        (Some(ip), _) => (ip.as_str(), own("ip")),
        (None, Some(ip)) => (ip.as_str(), "network.ip".to_owned()),
        (None, None) => return Err(errs.at(own("ip"), "missing: an IPv4 address in network.nodes, or \"dhcp\"")),
    };
    let ip = if ip_text == "dhcp" {
        None
    } else {
        let ip: Ipv4Addr = ip_text
            .parse()
            .map_err(|_| errs.at(&ip_field, format!("{ip_text:?} is not an IPv4 address or \"dhcp\"")))?;
        if !node_network.contains(&ip) {
            return Err(errs.at(&ip_field, format!("{ip} is outside the node network {node_network}")));
        }
        rules::check_node_address(ip, node_network).map_err(|r| errs.at(&ip_field, r))?;
        Some(ip)
    };
    let gateway_field = pick(e.gateway.is_some(), "gateway");
    let gateway = e
        .gateway
        .as_ref()
        .or(all.gateway.as_ref())
        .map(|g| g.parse::<Ipv4Addr>().map_err(|_| errs.at(&gateway_field, format!("{g:?} is not an IPv4 address"))))
        .transpose()?;
    let dns_field = pick(e.dns.is_some(), "dns");
    let dns = e
        .dns
        .as_ref()
        .or(all.dns.as_ref())
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(j, d)| {
                    d.parse::<Ipv4Addr>()
                        .map_err(|_| errs.at(format!("{dns_field}[{j}]"), format!("{d:?} is not an IPv4 address")))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let net = NodeNet {
        dhcp: ip.is_none(),
        interface: e.interface.clone(),
        // A DHCP node takes these from its lease: `[network]`'s are for static nodes.
        gateway: if ip.is_none() && e.gateway.is_none() { None } else { gateway },
        dns: if ip.is_none() && e.dns.is_none() { Vec::new() } else { dns },
        mtu: e.mtu.or(all.mtu),
    };
    let address = ip.map(|ip| Ipv4Net::new(ip, node_network.prefix_len()).expect("a valid prefix"));
    rules::check_node_net(&net, address).map_err(|(f, r)| {
        let field = match f.trim_start_matches("node.net.") {
            "interface" => own("interface"),
            "gateway" => gateway_field.clone(),
            "dns" => dns_field.clone(),
            _ => pick(e.mtu.is_some(), "mtu"),
        };
        errs.at(field, r)
    })?;
    Ok((ip, net))
}

/// Each node's drivers: its own `drivers`, else `images.drivers`, else the
/// virtio set.
fn add_drivers(errs: &Errs, file: &ClusterFile, nodes: &mut [Node]) -> Result<()> {
    let all = file.images.drivers.as_ref().map(|v| drivers(errs, "images.drivers", v)).transpose()?;
    for (i, node) in nodes.iter_mut().enumerate() {
        let field = format!("node[{i}].drivers");
        let own = file.nodes[i].drivers.as_ref().map(|v| drivers(errs, &field, v)).transpose()?;
        (node.drivers, node.drivers_field) = match (own, &all) {
            (Some(d), _) => (d, field),
            (None, Some(d)) => (d.clone(), "images.drivers".into()),
            (None, None) => (Drivers::default(), "images.drivers".into()),
        };
    }
    Ok(())
}

/// A kernel module's name as `modinfo` and `modprobe` take it.
fn check_module_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 55
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(()).ok_or_else(|| format!("{name:?} is not a kernel module name (letters, digits, _ and -)"))
}

fn drivers(errs: &Errs, field: &str, v: &toml::Value) -> Result<Drivers> {
    match v {
        toml::Value::String(s) => s.parse().map(Drivers::Set).map_err(|r: String| errs.at(field, r)),
        toml::Value::Array(list) => {
            let mut names = Vec::with_capacity(list.len());
            for (j, m) in list.iter().enumerate() {
                let name = m.as_str().ok_or_else(|| errs.at(format!("{field}[{j}]"), "expected a module name"))?;
                check_module_name(name).map_err(|r| errs.at(format!("{field}[{j}]"), r))?;
                names.push(name.to_owned());
            }
            if names.is_empty() {
                return Err(errs.at(field, "an empty list leaves the image no device drivers"));
            }
            Ok(Drivers::Modules(names))
        }
        _ => {
            Err(errs.at(field, "expected a driver set (\"virtio\", \"cloud\", \"hardware\") or a list of module names"))
        }
    }
}

/// Each node's fragments (every node's, its role's, its own; each file read
/// once) and the SSH keys.
fn add_ignition(errs: &Errs, file: &ClusterFile, nodes: &mut [Node]) -> Result<()> {
    for (i, key) in file.access.ssh_authorized_keys.iter().enumerate() {
        fragments::check_ssh_key(key).map_err(|r| errs.at(format!("access.ssh_authorized_keys[{i}]"), r))?;
    }
    for role in file.ignition.roles.keys() {
        role.parse::<Role>().map_err(|r| errs.at(format!("ignition.roles.{role}"), r))?;
    }
    // The embedded default has no file of its own: paths are then relative to here.
    let base = Path::new(errs.0).parent().unwrap_or(Path::new(""));
    let mut cache: HashMap<String, fragments::Fragment> = HashMap::new();
    let mut get = |written: &str, field: String| -> Result<fragments::Fragment> {
        if let Some(f) = cache.get(written) {
            return Ok(f.clone());
        }
        let f = fragments::load(base, written, errs.0, &field)?;
        cache.insert(written.to_owned(), f.clone());
        Ok(f)
    };
    for (i, node) in nodes.iter_mut().enumerate() {
        let all = file.ignition.merge.iter().enumerate().map(|(j, w)| (w, format!("ignition.merge[{j}]")));
        let role = file.ignition.roles.get(node.role.as_str()).map(|r| &r.merge[..]).unwrap_or_default();
        let role = role.iter().enumerate().map(|(j, w)| (w, format!("ignition.roles.{}.merge[{j}]", node.role)));
        let own = file.nodes[i].merge.iter().enumerate().map(|(j, w)| (w, format!("node[{i}].merge[{j}]")));
        for (written, field) in all.chain(role).chain(own) {
            node.ignition.merge.push(get(written, field)?);
        }
        node.ignition.ssh_authorized_keys = file.access.ssh_authorized_keys.clone();
    }
    Ok(())
}

fn etcd(errs: &Errs, s: &EtcdSection, nodes: &[Node]) -> Result<EtcdSettings> {
    // The scheme follows etcd.tls, so a node never speaks plain HTTP by a typo.
    let (scheme, why) =
        if s.tls { ("https://", "etcd.tls is true (the default)") } else { ("http://", "etcd.tls is false") };
    for (i, url) in s.endpoints.iter().enumerate() {
        // The node config holds endpoints to the same rule.
        rules::check_http_url(url).map_err(|r| errs.at(format!("etcd.endpoints[{i}]"), r))?;
        if !url.starts_with(scheme) {
            return Err(errs.at(format!("etcd.endpoints[{i}]"), format!("{url:?} must start with {scheme}: {why}")));
        }
    }
    let members = nodes.iter().filter(|n| n.role == Role::Etcd).count();
    if members == 0 && s.endpoints.is_empty() {
        return Err(errs.at("etcd.endpoints", "there is no etcd node and no external etcd endpoint; add a node with role = \"etcd\" or set etcd.endpoints"));
    }
    if members > 0 && !s.endpoints.is_empty() {
        return Err(errs.at("etcd.endpoints", "set either external endpoints or etcd nodes, not both"));
    }
    if members == 2 {
        return Err(errs.at("node", "2 etcd members cannot survive losing one; use 1 or 3 or more"));
    }
    for (field, port) in [("etcd.client_port", s.client_port), ("etcd.peer_port", s.peer_port)] {
        rules::check_port(port, "TCP").map_err(|r| errs.at(field, r))?;
    }
    if s.client_port == s.peer_port {
        return Err(errs.at("etcd.peer_port", "must differ from etcd.client_port"));
    }
    Ok(EtcdSettings {
        external_endpoints: s.endpoints.clone(),
        client_port: s.client_port,
        peer_port: s.peer_port,
        tls: s.tls,
    })
}

fn artifacts(errs: &Errs, a: &ArtifactsSection) -> Result<Artifacts> {
    let one = |name: &str, v: &Option<toml::Value>| {
        v.as_ref().map(|v| source(errs, &format!("artifacts.{name}"), v)).transpose()
    };
    // Refused rather than ignored: nothing would run it.
    if a.kubelet.is_some() {
        return Err(errs.at(
            "artifacts.kubelet",
            "the images do not run kubelet (no container runtime in them yet); kubelet comes from elsewhere \
             (on Flatcar: Typhoon, kubeadm); remove this key",
        ));
    }
    Ok(Artifacts { kernel: one("kernel", &a.kernel)?, etcd: one("etcd", &a.etcd)?, cni: one("cni", &a.cni)? })
}

fn source(errs: &Errs, field: &str, v: &toml::Value) -> Result<SourceSpec> {
    match v {
        toml::Value::String(s) => SourceSpec::parse_str(s).map_err(|r| errs.at(field, r)),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| !["url", "sha256"].contains(&k.as_str())) {
                return Err(errs.at(format!("{field}.{k}"), "unknown key (expected url and sha256)"));
            }
            let get = |k: &str| {
                t.get(k)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| errs.at(format!("{field}.{k}"), "missing (a string is required)"))
            };
            SourceSpec::parse_url(get("url")?, get("sha256")?).map_err(|r| errs.at(field, r))
        }
        _ => Err(errs.at(field, "expected a string (folder, .deb or apt:NAME) or a table { url, sha256 }")),
    }
}
