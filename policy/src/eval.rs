//! Whether a connection is allowed, as Kubernetes defines NetworkPolicy:
//! it must be allowed out of the source pod and into the destination pod.
//! A pod selected by no policy of a direction is not isolated in it; a pod
//! selected by some is allowed only what one of their rules allows
//! (rules add up). Replies of an allowed connection are allowed; that is the
//! enforcer's business (connection tracking), not a question asked here.

use std::collections::BTreeMap;

use crate::model::{IntOrString, Labels, Namespace, NetworkPolicy, Peer, PolicyPort, PolicyType, Protocol, Rule};
use crate::pods::Pod;
use crate::NAMESPACE_NAME_LABEL;

/// What policies apply to, with the namespaces' labels.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub policies: Vec<NetworkPolicy>,
    namespaces: BTreeMap<String, Labels>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl Cluster {
    /// `namespaces` from Namespace objects and a pods file (later ones add
    /// to earlier ones); every namespace also carries its name label.
    pub fn new(policies: Vec<NetworkPolicy>, namespaces: &[Namespace], extra: &BTreeMap<String, Labels>) -> Self {
        let mut labels: BTreeMap<String, Labels> = BTreeMap::new();
        for n in namespaces {
            labels.entry(n.metadata.name.clone()).or_default().extend(n.metadata.labels.clone());
        }
        for (name, l) in extra {
            labels.entry(name.clone()).or_default().extend(l.clone());
        }
        Cluster { policies, namespaces: labels }
    }

    fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.insert(NAMESPACE_NAME_LABEL.into(), ns.into());
        l
    }

    /// May `from` open a connection to `to` on `port`/`protocol`?
    pub fn verdict(&self, from: &Pod, to: &Pod, port: u16, protocol: Protocol) -> Verdict {
        let out = self.allowed(PolicyType::Egress, from, to, port, protocol);
        let into = self.allowed(PolicyType::Ingress, to, from, port, protocol);
        if out && into {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    /// Whether the policies of `pod`'s namespace that select it for `dir`
    /// allow traffic with `peer` (the destination is `to`'s side for ports:
    /// `pod` on ingress, `peer` on egress).
    fn allowed(&self, dir: PolicyType, pod: &Pod, peer: &Pod, port: u16, protocol: Protocol) -> bool {
        let dest = if dir == PolicyType::Ingress { pod } else { peer };
        let mut isolated = false;
        for p in self.selecting(dir, pod) {
            isolated = true;
            let mut rules: Box<dyn Iterator<Item = Rule<'_>>> =
                if dir == PolicyType::Ingress { Box::new(p.ingress_rules()) } else { Box::new(p.egress_rules()) };
            if rules.any(|r| self.rule_matches(r, p.namespace(), peer, dest, port, protocol)) {
                return true;
            }
        }
        !isolated
    }

    pub(crate) fn selecting<'a>(
        &'a self,
        dir: PolicyType,
        pod: &'a Pod,
    ) -> impl Iterator<Item = &'a NetworkPolicy> + 'a {
        self.policies.iter().filter(move |p| {
            p.namespace() == pod.namespace && p.types().contains(&dir) && p.spec.pod_selector.matches(&pod.labels)
        })
    }

    fn rule_matches(&self, r: Rule<'_>, policy_ns: &str, peer: &Pod, dest: &Pod, port: u16, proto: Protocol) -> bool {
        let peers_ok = match r.peers {
            None | Some([]) => true,
            Some(peers) => peers.iter().any(|p| self.peer_matches(p, policy_ns, peer)),
        };
        let ports_ok = match r.ports {
            None | Some([]) => true,
            Some(ports) => ports.iter().any(|p| port_matches(p, dest, port, proto)),
        };
        peers_ok && ports_ok
    }

    pub(crate) fn peer_matches(&self, peer: &Peer, policy_ns: &str, pod: &Pod) -> bool {
        if let Some(b) = &peer.ip_block {
            let inside = |c: &str| c.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&pod.ip));
            return inside(&b.cidr) && !b.except.iter().any(|e| inside(e));
        }
        let ns_ok = match &peer.namespace_selector {
            None => pod.namespace == policy_ns,
            Some(s) => s.matches(&self.namespace_labels(&pod.namespace)),
        };
        ns_ok && peer.pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
    }
}

/// A policy port against a destination port: the protocol (TCP when not
/// given) must agree, then a number, a range (`endPort`), or a name the
/// destination pod gives that port.
fn port_matches(p: &PolicyPort, dest: &Pod, port: u16, proto: Protocol) -> bool {
    if p.protocol.unwrap_or(Protocol::Tcp) != proto {
        return false;
    }
    match &p.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let end = p.end_port.unwrap_or(*n);
            (*n..=end).contains(&i64::from(port))
        }
        Some(IntOrString::String(name)) => {
            dest.ports.iter().any(|cp| cp.name.as_deref() == Some(name) && cp.port == port && cp.protocol == proto)
        }
    }
}
