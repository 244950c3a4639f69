//! NetworkPolicy compiled to one nftables table for one node's pods, from
//! the same matching code as [`Cluster::verdict`], so what `imgbuild policy
//! test` prints is what a node enforces.
//!
//! The table filters the forward hook (pod traffic, routed or bridged with
//! br_netfilter); the node's own traffic to its pods (kubelet's probes)
//! never passes it. Replies of allowed connections pass by conntrack. A
//! local pod selected for a direction jumps to its own chain, which returns
//! (egress) or accepts (ingress) what a rule allows and drops the rest;
//! pods whose identity is not known yet are dropped both ways (fail closed).
//! The text replaces the whole table in one `nft -f` transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use crate::eval::Cluster;
use crate::model::{IntOrString, Peer, PolicyPort, PolicyType, Protocol, Rule};
use crate::pods::Pod;

/// The table's family and name.
pub const TABLE: &str = "inet imgbuild-policy";

/// What one node enforces: its pods, and the addresses of its pods whose
/// labels are not known yet.
pub struct Node<'a> {
    pub local: Vec<&'a Pod>,
    pub pending: BTreeSet<IpAddr>,
}

/// Who is on the other side of a rule.
enum Peers {
    Any,
    Some { ips: BTreeSet<IpAddr>, blocks: Vec<(String, Vec<String>)> },
}

/// Ports of one protocol: all of them, or these ranges.
type PortSet = BTreeMap<Protocol, Option<BTreeSet<(u16, u16)>>>;

impl Cluster {
    /// The nft script that replaces the table with what `node` enforces;
    /// `all` is every known pod of the cluster (peers are matched among them).
    pub fn nft_script(&self, node: &Node<'_>, all: &[Pod]) -> String {
        let mut chains = String::new();
        let mut maps: [BTreeMap<IpAddr, String>; 2] = Default::default();
        let mut local: Vec<&Pod> = node.local.clone();
        local.sort_by_key(|p| p.ip);
        for (i, pod) in local.iter().enumerate() {
            // The table is IPv4 (`ip saddr`); pods are, as the pod network.
            if node.pending.contains(&pod.ip) || !pod.ip.is_ipv4() {
                continue;
            }
            for (d, dir) in [PolicyType::Egress, PolicyType::Ingress].into_iter().enumerate() {
                if let Some(body) = self.pod_chain(dir, pod, all) {
                    let name = format!("{}-{i}", if dir == PolicyType::Egress { "egress" } else { "ingress" });
                    let _ = write!(chains, "\n\tchain {name} {{\n\t\tcomment \"{}\"\n{body}\t}}\n", comment(&pod.id()));
                    maps[d].insert(pod.ip, name);
                }
            }
        }
        let mut s = format!("table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n");
        s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n");
        s.push_str("\t\tct state established,related accept\n");
        let pending: Vec<String> = node.pending.iter().filter(|ip| ip.is_ipv4()).map(IpAddr::to_string).collect();
        if !pending.is_empty() {
            let pending = set(pending.into_iter());
            let _ = writeln!(s, "\t\tip saddr {pending} drop\n\t\tip daddr {pending} drop");
        }
        for (field, map) in ["saddr", "daddr"].into_iter().zip(&maps) {
            if !map.is_empty() {
                let entries = map.iter().map(|(ip, c)| format!("{ip} : jump {c}")).collect::<Vec<_>>();
                let _ = writeln!(s, "\t\tip {field} vmap {{ {} }}", entries.join(", "));
            }
        }
        s.push_str("\t}\n");
        s.push_str(&chains);
        s.push_str("}\n");
        s
    }

    /// The rules of `pod`'s chain for `dir`, or None when no policy selects
    /// it for `dir` (it is not isolated: no chain).
    fn pod_chain(&self, dir: PolicyType, pod: &Pod, all: &[Pod]) -> Option<String> {
        let mut selecting = self.selecting(dir, pod).peekable();
        selecting.peek()?;
        let (field, verdict) = if dir == PolicyType::Ingress { ("saddr", "accept") } else { ("daddr", "return") };
        let mut lines = BTreeSet::new();
        for policy in selecting {
            let rules: Vec<Rule<'_>> = match dir {
                PolicyType::Ingress => policy.ingress_rules().collect(),
                PolicyType::Egress => policy.egress_rules().collect(),
            };
            for rule in rules {
                let peers = self.peers(rule.peers, policy.namespace(), all);
                let matches = match dir {
                    PolicyType::Ingress => ingress_matches(&peers, rule.ports, pod),
                    PolicyType::Egress => self.egress_matches(&peers, rule, policy.namespace(), all),
                };
                lines.extend(matches.iter().flat_map(|m| render_match(field, m)));
            }
        }
        let mut body = String::new();
        for l in &lines {
            let _ = writeln!(body, "\t\t{}{verdict}", if l.is_empty() { String::new() } else { format!("{l} ") });
        }
        body.push_str("\t\tdrop\n");
        Some(body)
    }

    /// The pods (and blocks) a rule's peers name; absent or empty is anyone.
    fn peers(&self, peers: Option<&[Peer]>, policy_ns: &str, all: &[Pod]) -> Peers {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else { return Peers::Any };
        let mut ips = BTreeSet::new();
        let mut blocks = Vec::new();
        for peer in peers {
            match &peer.ip_block {
                // Pod addresses are IPv4; an IPv6 block can match none.
                Some(b) => {
                    if let Ok(ipnet::IpNet::V4(net)) = b.cidr.parse::<ipnet::IpNet>() {
                        blocks.push((net.trunc().to_string(), aggregated(&b.except)));
                    }
                }
                None => ips.extend(
                    all.iter().filter(|p| p.ip.is_ipv4() && self.peer_matches(peer, policy_ns, p)).map(|p| p.ip),
                ),
            }
        }
        Peers::Some { ips, blocks }
    }

    /// An egress rule's matches: numbered ports for every peer; named ones
    /// are the destination pod's, so each is matched with that pod's address.
    fn egress_matches(&self, peers: &Peers, rule: Rule<'_>, policy_ns: &str, all: &[Pod]) -> Vec<Match> {
        let Some(ports) = rule.ports.filter(|p| !p.is_empty()) else {
            return who(peers).into_iter().map(|w| Match { who: w, ports: None }).collect();
        };
        let (named, numbered): (Vec<&PolicyPort>, Vec<&PolicyPort>) =
            ports.iter().partition(|p| matches!(p.port, Some(IntOrString::String(_))));
        let mut out = Vec::new();
        if !numbered.is_empty() {
            let set = port_set(numbered.iter().copied(), None);
            out.extend(who(peers).into_iter().map(|w| Match { who: w, ports: Some(set.clone()) }));
        }
        if !named.is_empty() {
            let in_peers = |p: &Pod| match rule.peers.filter(|ps| !ps.is_empty()) {
                None => true,
                Some(ps) => ps.iter().any(|peer| self.peer_matches(peer, policy_ns, p)),
            };
            for dest in all.iter().filter(|p| p.ip.is_ipv4() && in_peers(p)) {
                let set = port_set(named.iter().copied(), Some(dest));
                if !set.is_empty() {
                    out.push(Match { who: Who::Ips(BTreeSet::from([dest.ip])), ports: Some(set) });
                }
            }
        }
        out
    }
}

/// One side of a match: addresses, or a block without its exceptions.
#[derive(Clone)]
enum Who {
    All,
    Ips(BTreeSet<IpAddr>),
    Block(String, Vec<String>),
}

struct Match {
    who: Who,
    /// None: every protocol and port.
    ports: Option<PortSet>,
}

fn who(peers: &Peers) -> Vec<Who> {
    match peers {
        Peers::Any => vec![Who::All],
        Peers::Some { ips, blocks } => {
            let mut w: Vec<Who> = blocks.iter().map(|(c, e)| Who::Block(c.clone(), e.clone())).collect();
            if !ips.is_empty() {
                w.insert(0, Who::Ips(ips.clone()));
            }
            w
        }
    }
}

/// An ingress rule's matches: ports (named ones are `pod`'s own) from peers.
fn ingress_matches(peers: &Peers, ports: Option<&[PolicyPort]>, pod: &Pod) -> Vec<Match> {
    let ports = match ports.filter(|p| !p.is_empty()) {
        None => None,
        Some(ports) => {
            let set = port_set(ports.iter(), Some(pod));
            if set.is_empty() {
                // Only names this pod does not have: the rule allows nothing.
                return Vec::new();
            }
            Some(set)
        }
    };
    who(peers).into_iter().map(|w| Match { who: w, ports: ports.clone() }).collect()
}

/// The ports a rule's entries give, per protocol; a named entry resolves
/// through `dest`'s ports (and to nothing without a `dest`).
fn port_set<'a>(ports: impl Iterator<Item = &'a PolicyPort>, dest: Option<&Pod>) -> PortSet {
    let mut set = PortSet::new();
    for p in ports {
        let proto = p.protocol.unwrap_or(Protocol::Tcp);
        let ranges: Option<Vec<(u16, u16)>> = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => {
                let clamp = |v: i64| v.clamp(1, 65535) as u16;
                Some(vec![(clamp(*n), clamp(p.end_port.unwrap_or(*n)))])
            }
            Some(IntOrString::String(name)) => Some(
                dest.map(|d| {
                    d.ports
                        .iter()
                        .filter(|cp| cp.name.as_deref() == Some(name) && cp.protocol == proto)
                        .map(|cp| (cp.port, cp.port))
                        .collect()
                })
                .unwrap_or_default(),
            ),
        };
        match ranges {
            None => {
                set.insert(proto, None);
            }
            Some(r) if r.is_empty() => {}
            // Already every port of `proto` (None): nothing to add.
            Some(r) => {
                if let Some(ranges) = set.entry(proto).or_insert_with(|| Some(BTreeSet::new())) {
                    ranges.extend(r);
                }
            }
        }
    }
    set
}

/// A chain's comment: nft takes at most 128 bytes, and a pod's
/// `NAMESPACE/NAME` can be longer.
fn comment(id: &str) -> String {
    let mut end = id.len().min(128);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].to_owned()
}

fn set(items: impl Iterator<Item = String>) -> String {
    format!("{{ {} }}", items.collect::<Vec<_>>().join(", "))
}

/// One match as nft expressions (empty: everything), a line per protocol.
fn render_match(field: &str, m: &Match) -> Vec<String> {
    let who = match &m.who {
        Who::All => String::new(),
        Who::Ips(ips) => format!("ip {field} {}", set(ips.iter().map(IpAddr::to_string))),
        Who::Block(cidr, except) if except.is_empty() => format!("ip {field} {cidr}"),
        Who::Block(cidr, except) => format!("ip {field} {cidr} ip {field} != {}", set(except.iter().cloned())),
    };
    let Some(ports) = &m.ports else { return vec![who] };
    let per_proto: Vec<String> = ports
        .iter()
        .map(|(proto, ranges)| {
            let l4 = format!("meta l4proto {}", proto.as_str().to_ascii_lowercase());
            match ranges {
                None => l4,
                Some(r) => {
                    let items =
                        merged(r).into_iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") });
                    format!("{l4} th dport {}", set(items))
                }
            }
        })
        .collect();
    per_proto.into_iter().map(|p| if who.is_empty() { p } else { format!("{who} {p}") }).collect()
}

/// Port ranges with overlapping and adjacent ones joined: nft refuses
/// overlapping intervals in one set.
fn merged(ranges: &BTreeSet<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// IPv4 prefixes with those inside others dropped and neighbours joined,
/// as nft wants a set's intervals.
fn aggregated(cidrs: &[String]) -> Vec<String> {
    let nets: Vec<ipnet::Ipv4Net> = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    ipnet::Ipv4Net::aggregate(&nets).iter().map(ToString::to_string).collect()
}
