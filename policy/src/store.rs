//! The layout in etcd, shared by `imgbuild policy` (which writes policies
//! and namespaces) and the agents (which publish their pods' endpoints and
//! enforce what they read): everything under [`PREFIX`], one key per
//! object, each value JSON.
//!
//! Anyone with a node certificate can write under the prefix, so every
//! value read back is checked as `apply` checks a manifest, and must be
//! stored under its own name; one that is not is skipped, by name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Labels, Namespace, NetworkPolicy};
use crate::pods::{Pod, PodPort};

/// `networkpolicies/NAMESPACE/NAME`, `namespaces/NAME`,
/// `endpoints/NODE/SANDBOX` and `podlabels/NAMESPACE/NAME`.
pub const PREFIX: &str = "/imgbuild/policy/v1/";

pub fn policy_key(ns: &str, name: &str) -> String {
    format!("{PREFIX}networkpolicies/{ns}/{name}")
}

pub fn namespace_key(name: &str) -> String {
    format!("{PREFIX}namespaces/{name}")
}

/// Where a node's endpoints live; one node's are `endpoints_prefix(node)`.
pub fn endpoint_key(node: &str, sandbox: &str) -> String {
    format!("{}{sandbox}", endpoints_prefix(node))
}

/// A pod's labels as set by `imgbuild policy label`: they replace the
/// runtime's, which kubelet never changes after the sandbox is made.
pub fn pod_labels_key(ns: &str, name: &str) -> String {
    format!("{PREFIX}podlabels/{ns}/{name}")
}

pub fn endpoints_prefix(node: &str) -> String {
    format!("{PREFIX}endpoints/{node}/")
}

/// A pod's endpoint, as the agent of its node publishes it: the sandbox
/// CNI was given, its address, and its identity from the container runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub node: String,
    pub sandbox: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub labels: Labels,
    /// Container ports, by which named ports in policies resolve.
    #[serde(default)]
    pub ports: Vec<PodPort>,
}

impl Endpoint {
    pub fn pod(&self) -> Pod {
        Pod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            ip: self.ip,
            labels: self.labels.clone(),
            ports: self.ports.clone(),
        }
    }

    pub fn key(&self) -> String {
        endpoint_key(&self.node, &self.sandbox)
    }

    /// The checks a pods file gets, plus a node name and a sandbox ID that
    /// are safe in a key.
    pub fn check(&self) -> Result<(), String> {
        if !crate::is_object_name(&self.node) {
            return Err(format!("node {:?} is not a node name", self.node));
        }
        if !is_container_id(&self.sandbox) {
            return Err(format!("sandbox {:?} is not a sandbox ID", self.sandbox));
        }
        // The pod network is IPv4; an IPv6 (or IPv4-mapped) address would
        // slip past the checks that compare addresses.
        if !self.ip.is_ipv4() {
            return Err(format!("{} is not an IPv4 pod address", self.ip));
        }
        let file = crate::PodsFile { namespaces: BTreeMap::new(), pods: vec![self.pod()] };
        crate::pods::check_pods(&file)
            .map_err(|(field, reason)| format!("{}: {reason}", field.replacen("pods[0].", "", 1)))
    }
}

/// A container ID as CNI defines one (an alphanumeric, then alphanumerics,
/// `_`, `.` and `-`), at most 128 bytes: safe as a key's and a file's name.
pub fn is_container_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Everything under [`PREFIX`], read back and checked.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub policies: Vec<NetworkPolicy>,
    pub namespaces: Vec<Namespace>,
    /// With the labels of `podlabels/` in place of the runtime's.
    pub endpoints: Vec<Endpoint>,
    /// `podlabels/`: (namespace, name) -> labels.
    pub pod_labels: BTreeMap<(String, String), Labels>,
    /// Keys skipped, and why.
    pub skipped: Vec<(String, String)>,
}

impl Snapshot {
    pub fn from_kvs<'a>(kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Snapshot {
        let mut s = Snapshot::default();
        for (key, value) in kvs {
            let res = if key.starts_with(&format!("{PREFIX}networkpolicies/")) {
                stored_policy(key, value).map(|p| s.policies.push(p))
            } else if key.starts_with(&format!("{PREFIX}namespaces/")) {
                stored_namespace(key, value).map(|n| s.namespaces.push(n))
            } else if key.starts_with(&format!("{PREFIX}endpoints/")) {
                stored_endpoint(key, value).map(|e| s.endpoints.push(e))
            } else if key.starts_with(&format!("{PREFIX}podlabels/")) {
                stored_pod_labels(key, value).map(|(id, l)| {
                    s.pod_labels.insert(id, l);
                })
            } else {
                Err("not a key of this layout".into())
            };
            if let Err(why) = res {
                s.skipped.push((key.to_owned(), why));
            }
        }
        // Two endpoints claiming one address: neither is trusted with it.
        let mut by_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for e in &s.endpoints {
            *by_ip.entry(e.ip).or_default() += 1;
        }
        let (kept, dup): (Vec<Endpoint>, Vec<Endpoint>) = s.endpoints.drain(..).partition(|e| by_ip[&e.ip] == 1);
        s.endpoints = kept;
        s.skipped.extend(dup.into_iter().map(|e| (e.key(), format!("{} is claimed by another endpoint too", e.ip))));
        for e in &mut s.endpoints {
            if let Some(l) = s.pod_labels.get(&(e.namespace.clone(), e.name.clone())) {
                e.labels = l.clone();
            }
        }
        s
    }
}

fn text(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|_| "not UTF-8".to_owned())
}

/// A stored value as a policy: it passes `apply`'s checks and its own
/// namespace and name are the key's.
pub fn stored_policy(key: &str, value: &[u8]) -> Result<NetworkPolicy, String> {
    let m = crate::parse_manifests(text(value)?, "stored.json").map_err(|e| format!("{}: {}", e.field, e.reason))?;
    let ([p], []) = (&m.policies[..], &m.namespaces[..]) else { return Err("not one NetworkPolicy".into()) };
    if key != policy_key(p.namespace(), &p.metadata.name) {
        return Err(format!("holds {}/{}, not what its key names", p.namespace(), p.metadata.name));
    }
    Ok(p.clone())
}

pub fn stored_namespace(key: &str, value: &[u8]) -> Result<Namespace, String> {
    let m = crate::parse_manifests(text(value)?, "stored.json").map_err(|e| format!("{}: {}", e.field, e.reason))?;
    let ([n], []) = (&m.namespaces[..], &m.policies[..]) else { return Err("not one Namespace".into()) };
    if key != namespace_key(&n.metadata.name) {
        return Err(format!("holds namespace {}, not what its key names", n.metadata.name));
    }
    Ok(n.clone())
}

pub fn stored_endpoint(key: &str, value: &[u8]) -> Result<Endpoint, String> {
    let e: Endpoint = serde_json::from_slice(value).map_err(|e| format!("not an endpoint: {e}"))?;
    e.check()?;
    if key != e.key() {
        return Err(format!("holds {}'s endpoint {}, not what its key names", e.node, e.sandbox));
    }
    Ok(e)
}

/// `podlabels/NS/NAME`: names from the key, labels checked as a manifest's.
pub fn stored_pod_labels(key: &str, value: &[u8]) -> Result<((String, String), Labels), String> {
    let id = key.strip_prefix(&format!("{PREFIX}podlabels/")).unwrap_or_default();
    let (ns, name) = id.split_once('/').ok_or("not podlabels/NAMESPACE/NAME")?;
    if !crate::is_object_name(ns) || !crate::is_object_name(name) {
        return Err("not podlabels/NAMESPACE/NAME".into());
    }
    let labels: Labels = serde_json::from_slice(value).map_err(|e| format!("not labels: {e}"))?;
    for (k, v) in &labels {
        crate::load::check_label(k, v, &format!("labels.{k}")).map_err(|(f, r)| format!("{f}: {r}"))?;
    }
    Ok(((ns.to_owned(), name.to_owned()), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(node: &str, sandbox: &str, ip: &str) -> Endpoint {
        Endpoint {
            node: node.into(),
            sandbox: sandbox.into(),
            namespace: "x".into(),
            name: "a".into(),
            uid: String::new(),
            ip: ip.parse().unwrap(),
            labels: [("pod".to_owned(), "a".to_owned())].into(),
            ports: vec![],
        }
    }

    #[test]
    fn endpoints_are_checked_and_must_sit_under_their_own_key() {
        let e = endpoint("w1", "abc123", "10.1.1.2");
        let v = serde_json::to_vec(&e).unwrap();
        assert_eq!(stored_endpoint(&e.key(), &v).unwrap(), e);
        assert!(stored_endpoint(&endpoint_key("w2", "abc123"), &v).unwrap_err().contains("not what its key names"));
        for bad in [endpoint("../w1", "abc", "10.1.1.2"), endpoint("w1", "a/b", "10.1.1.2")] {
            let v = serde_json::to_vec(&bad).unwrap();
            assert!(stored_endpoint(&bad.key(), &v).is_err(), "{bad:?}");
        }
        // IPv4 only: an IPv6 or IPv4-mapped address slips past address checks.
        for ip in ["fd00::1", "::ffff:10.1.1.2"] {
            let bad = endpoint("w1", "abc123", ip);
            let err = stored_endpoint(&bad.key(), &serde_json::to_vec(&bad).unwrap()).unwrap_err();
            assert!(err.contains("is not an IPv4 pod address"), "{err}");
        }
        let mut bad_label = e.clone();
        bad_label.labels.insert("-x".into(), "y".into());
        assert!(stored_endpoint(&bad_label.key(), &serde_json::to_vec(&bad_label).unwrap()).is_err());
    }

    #[test]
    fn pod_labels_replace_the_runtimes() {
        let a = endpoint("w1", "aaa", "10.1.1.2");
        let kvs = [
            (a.key(), serde_json::to_vec(&a).unwrap()),
            (pod_labels_key("x", "a"), br#"{"pod":"b"}"#.to_vec()),
            (pod_labels_key("x", "bad"), br#"{"-x":"b"}"#.to_vec()),
        ];
        let s = Snapshot::from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        assert_eq!(s.endpoints[0].labels, [("pod".to_owned(), "b".to_owned())].into());
        assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    }

    #[test]
    fn an_address_claimed_twice_is_trusted_to_neither() {
        let a = endpoint("w1", "aaa", "10.1.1.2");
        let b = endpoint("w2", "bbb", "10.1.1.2");
        let c = endpoint("w2", "ccc", "10.1.2.2");
        let kvs: Vec<(String, Vec<u8>)> =
            [&a, &b, &c].iter().map(|e| (e.key(), serde_json::to_vec(e).unwrap())).collect();
        let s = Snapshot::from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        assert_eq!(s.endpoints, vec![c]);
        assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
    }
}
