//! Reading manifests: YAML (several documents with `---`) or JSON (one
//! object, an array, or a stream), `kind: List` flattened; each object
//! checked as the API server would, refused with its document's index and
//! the field's path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{IntOrString, LabelSelector, Namespace, NetworkPolicy, Operator, Peer, PolicyPort};
use crate::strict::{self, Strict};
use crate::Invalid;

/// The objects of one or more manifest files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    pub policies: Vec<NetworkPolicy>,
    pub namespaces: Vec<Namespace>,
    /// Each object's identity (`NetworkPolicy a/web`) and where it is.
    ids: Vec<(String, String)>,
}

type Check = Result<(), (String, String)>;

fn refuse<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, (String, String)> {
    Err((field.into(), reason.into()))
}

/// A manifest file, or every `.yaml`, `.yml` and `.json` file of a folder
/// (not its subfolders, as `kubectl apply -f DIR`), in name order. An
/// object given twice (same kind, namespace and name) is refused, naming
/// both places: Kubernetes keeps one object per name.
pub fn load_manifests(path: &Path) -> Result<Manifests, Invalid> {
    let origin = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Invalid::new(&origin, "", e.to_string()))?;
    let files = if meta.is_dir() { manifest_files(path)? } else { vec![path.to_owned()] };
    let mut all = Manifests::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in files {
        let origin = file.display().to_string();
        let text = strict::read_file(&file).map_err(|r| Invalid::new(&origin, "", r))?;
        let m = parse_manifests(&text, &origin)?;
        for (id, at) in m.ids.iter() {
            if let Some(first) = seen.insert(id.clone(), format!("{origin} {at}")) {
                return Err(Invalid::new(&origin, at.clone(), format!("{id} is also defined at {first}")));
            }
        }
        all.policies.extend(m.policies);
        all.namespaces.extend(m.namespaces);
    }
    Ok(all)
}

/// The manifest files of a folder; one that cannot be read, or a folder
/// with none, is an error (a missing deny policy must not read as "allow").
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, Invalid> {
    let origin = dir.display().to_string();
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Invalid::new(&origin, "", e.to_string()))? {
        let path = e.map_err(|e| Invalid::new(&origin, "", e.to_string()))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("yaml" | "yml" | "json")) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => files.push(path),
            Err(e) => return Err(Invalid::new(path.display().to_string(), "", e.to_string())),
        }
    }
    if files.is_empty() {
        return Err(Invalid::new(origin, "", "no .yaml, .yml or .json manifests in this folder"));
    }
    files.sort();
    Ok(files)
}

/// The objects in one file's text; `origin` names it in errors and says
/// by its extension whether the text is JSON (`.json`) or YAML.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Manifests, Invalid> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    strict::check_depth(text).map_err(|r| Invalid::new(origin, "", r))?;
    let mut out = Manifests::default();
    let json = origin.to_ascii_lowercase().ends_with(".json");
    let docs = if json { json_documents(text) } else { yaml_documents(text) };
    for (i, doc) in docs.map_err(|(f, r)| Invalid::new(origin, f, r))?.into_iter().enumerate() {
        let at = format!("documents[{i}]");
        add_object(&mut out, doc, &at).map_err(|(f, r)| Invalid::new(origin, f, r))?;
    }
    let mut seen = HashMap::new();
    for (id, at) in &out.ids {
        if let Some(first) = seen.insert(id.clone(), at.clone()) {
            return Err(Invalid::new(origin, at.clone(), format!("{id} is also defined at {first}")));
        }
    }
    Ok(out)
}

/// A JSON text: one object, an array of objects, or a stream of them.
fn json_documents(text: &str) -> Result<Vec<Value>, (String, String)> {
    let mut docs = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Strict>() {
        match v {
            Ok(Strict(Value::Array(items))) => docs.extend(items),
            Ok(Strict(v)) => docs.push(v),
            Err(e) => return refuse(format!("documents[{}]", docs.len()), format!("not JSON: {e}")),
        }
    }
    Ok(docs)
}

/// The documents of a YAML stream, in order; empty documents are kept as
/// `null` so indexes match what a reader counts.
fn yaml_documents(text: &str) -> Result<Vec<Value>, (String, String)> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Strict::deserialize(doc).map(|s| s.0).map_err(|e| (format!("documents[{i}]"), format!("not YAML: {e}")))
        })
        .collect()
}

fn add_object(out: &mut Manifests, doc: Value, at: &str) -> Check {
    if doc.is_null() {
        return Ok(());
    }
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
    match (kind.as_str(), api.as_str()) {
        ("NetworkPolicy", "networking.k8s.io/v1") => {
            let p: NetworkPolicy = typed(doc, at)?;
            check_policy(&p, at)?;
            out.ids.push((format!("NetworkPolicy {}/{}", p.namespace(), p.metadata.name), at.to_owned()));
            out.policies.push(p);
        }
        ("Namespace", "v1") => {
            let n: Namespace = typed(doc, at)?;
            check_name(&n.metadata.name, &format!("{at}.metadata.name"))?;
            out.ids.push((format!("Namespace {}", n.metadata.name), at.to_owned()));
            out.namespaces.push(n);
        }
        ("List" | "NetworkPolicyList" | "NamespaceList", "v1" | "networking.k8s.io/v1") => {
            let Some(Value::Array(items)) = doc.get("items").cloned() else {
                return refuse(format!("{at}.items"), "a List needs an items array");
            };
            for (j, item) in items.into_iter().enumerate() {
                add_object(out, item, &format!("{at}.items[{j}]"))?;
            }
        }
        ("NetworkPolicy" | "Namespace", _) => {
            let want = if kind == "Namespace" { "v1" } else { "networking.k8s.io/v1" };
            return refuse(format!("{at}.apiVersion"), format!("{api:?} is not {want}"));
        }
        _ if !doc.is_object() => return refuse(at, "not an object"),
        _ => return refuse(format!("{at}.kind"), format!("{kind:?} is not NetworkPolicy or Namespace")),
    }
    Ok(())
}

/// `doc` as `T`, unknown fields refused, with the failing field's path.
fn typed<T: for<'de> Deserialize<'de>>(doc: Value, at: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { at.to_owned() } else { format!("{at}.{path}") };
        (field, e.inner().to_string())
    })
}

fn check_policy(p: &NetworkPolicy, at: &str) -> Check {
    check_name(&p.metadata.name, &format!("{at}.metadata.name"))?;
    if let Some(ns) = &p.metadata.namespace {
        check_name(ns, &format!("{at}.metadata.namespace"))?;
    }
    check_selector(&p.spec.pod_selector, &format!("{at}.spec.podSelector"))?;
    // As the API server: at most two values (an empty list is the default).
    if p.spec.policy_types.as_ref().is_some_and(|t| t.len() > 2) {
        return refuse(format!("{at}.spec.policyTypes"), "may not name more than two types");
    }
    for (i, r) in p.spec.ingress.iter().flatten().enumerate() {
        check_rule(r.from.as_deref(), r.ports.as_deref(), &format!("{at}.spec.ingress[{i}]"), "from")?;
    }
    for (i, r) in p.spec.egress.iter().flatten().enumerate() {
        check_rule(r.to.as_deref(), r.ports.as_deref(), &format!("{at}.spec.egress[{i}]"), "to")?;
    }
    Ok(())
}

fn check_rule(peers: Option<&[Peer]>, ports: Option<&[PolicyPort]>, at: &str, side: &str) -> Check {
    for (i, peer) in peers.into_iter().flatten().enumerate() {
        check_peer(peer, &format!("{at}.{side}[{i}]"))?;
    }
    for (i, port) in ports.into_iter().flatten().enumerate() {
        check_port(port, &format!("{at}.ports[{i}]"))?;
    }
    Ok(())
}

fn check_peer(peer: &Peer, at: &str) -> Check {
    if let Some(s) = &peer.pod_selector {
        check_selector(s, &format!("{at}.podSelector"))?;
    }
    if let Some(s) = &peer.namespace_selector {
        check_selector(s, &format!("{at}.namespaceSelector"))?;
    }
    let selects = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match &peer.ip_block {
        Some(_) if selects => refuse(at, "ipBlock cannot be combined with podSelector or namespaceSelector"),
        Some(b) => check_ip_block(&b.cidr, &b.except, &format!("{at}.ipBlock")),
        None if !selects => refuse(at, "a peer needs podSelector, namespaceSelector or ipBlock"),
        None => Ok(()),
    }
}

/// A CIDR as the API server takes one: no IPv4 octet with a leading zero,
/// which some parsers read as octal (nft does) and others as decimal.
fn parse_cidr(c: &str, field: &str) -> Result<IpNet, (String, String)> {
    let bad = || (field.to_owned(), format!("{c:?} is not a CIDR"));
    let net: IpNet = c.parse().map_err(|_| bad())?;
    let addr = c.split('/').next().unwrap_or_default();
    if net.addr().is_ipv4() && addr.split('.').any(|o| o.len() > 1 && o.starts_with('0')) {
        return Err((field.to_owned(), format!("{c:?} is not a CIDR (an octet with a leading zero)")));
    }
    Ok(net)
}

fn check_ip_block(cidr: &str, except: &[String], at: &str) -> Check {
    let net = parse_cidr(cidr, &format!("{at}.cidr"))?;
    for (i, e) in except.iter().enumerate() {
        let field = format!("{at}.except[{i}]");
        let ex = parse_cidr(e, &field)?;
        // As the API server: each except must be strictly inside the cidr.
        if !(net.contains(&ex.network()) && ex.prefix_len() > net.prefix_len()) {
            return refuse(field, format!("{e} is not inside the cidr {cidr}"));
        }
    }
    Ok(())
}

fn check_port(p: &PolicyPort, at: &str) -> Check {
    match &p.port {
        Some(IntOrString::Int(n)) => {
            if !(1..=65535).contains(n) {
                return refuse(format!("{at}.port"), format!("{n} is not a port (1 to 65535)"));
            }
            if let Some(end) = p.end_port {
                if !(*n..=65535).contains(&end) {
                    return refuse(format!("{at}.endPort"), format!("{end} is not from port {n} to 65535"));
                }
            }
        }
        Some(IntOrString::String(name)) => {
            if !is_port_name(name) {
                return refuse(
                    format!("{at}.port"),
                    format!("{name:?} is not a port name (1-15 lower-case letters, digits and '-', with a letter)"),
                );
            }
            if p.end_port.is_some() {
                return refuse(format!("{at}.endPort"), "needs a numeric port");
            }
        }
        None if p.end_port.is_some() => return refuse(format!("{at}.endPort"), "needs a numeric port"),
        None => {}
    }
    Ok(())
}

/// An IANA service name, as Kubernetes requires of named ports.
pub(crate) fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn check_selector(s: &LabelSelector, at: &str) -> Check {
    for (k, v) in &s.match_labels {
        check_label(k, v, &format!("{at}.matchLabels.{k}"))?;
    }
    for (i, r) in s.match_expressions.iter().enumerate() {
        let field = format!("{at}.matchExpressions[{i}]");
        check_label(&r.key, "", &format!("{field}.key"))?;
        let with_values = matches!(r.operator, Operator::In | Operator::NotIn);
        if with_values && r.values.is_empty() {
            return refuse(format!("{field}.values"), format!("{:?} needs at least one value", r.operator));
        }
        if !with_values && !r.values.is_empty() {
            return refuse(format!("{field}.values"), format!("{:?} takes no values", r.operator));
        }
        for (j, v) in r.values.iter().enumerate() {
            check_label("x", v, &format!("{field}.values[{j}]"))?;
        }
    }
    Ok(())
}

/// Kubernetes' label rules: an optional DNS-subdomain prefix and `/`, a
/// name of at most 63 characters; values at most 63, possibly empty.
pub fn check_label(key: &str, value: &str, at: &str) -> Check {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| check_name(p, at).is_err() || name.contains('/')) {
        return refuse(at, format!("{key:?} is not a label key"));
    }
    let part = |s: &str| {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    };
    if name.is_empty() || !part(name) || key.len() > 253 + 1 + 63 {
        return refuse(at, format!("{key:?} is not a label key"));
    }
    if !part(value) {
        return refuse(at, format!("{value:?} is not a label value (at most 63 letters, digits, '-', '_', '.')"));
    }
    Ok(())
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
pub fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

pub(crate) fn check_name(name: &str, at: &str) -> Check {
    if is_object_name(name) {
        Ok(())
    } else {
        refuse(at, format!("{name:?} is not a name (lower-case letters, digits, '-' and '.')"))
    }
}
