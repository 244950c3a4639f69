//! `imgbuild policy`: Kubernetes NetworkPolicy as the cluster's agents will
//! enforce it (the model and its semantics are the `imgbuild-policy` crate),
//! kept in the cluster's etcd under [`PREFIX`].
//!
//! The layout is ours, not Calico's `/calico/resources/v3/projectcalico.org/`:
//! that holds Calico's own resource types, while users write Kubernetes'
//! objects, which we store exactly as applied (canonical JSON), one key per
//! object, so `get` gives back what `apply` took.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use imgbuild_policy::{load_manifests, load_pods, Cluster, Invalid, NetworkPolicy, Protocol};

use crate::cmdline::EtcdAccess;
use crate::error::InputError;
use crate::etcd::{ClientTls, Etcd};
use crate::pki::{self, Pki};

pub use imgbuild_policy::store::PREFIX;
use imgbuild_policy::store::{namespace_key, pod_labels_key, policy_key, stored_policy, Snapshot};

/// The cluster's etcd, as its administrator: the cluster file's endpoints
/// (or `--endpoints`) and, with etcd TLS, an admin certificate from the CA.
pub fn connect(access: &EtcdAccess) -> Result<Etcd> {
    let cluster = crate::build::load_cluster(access.cluster.as_deref())?;
    let endpoints = match &access.endpoints {
        Some(e) => e.clone(),
        None => cluster.etcd_endpoints(),
    };
    for (i, e) in endpoints.iter().enumerate() {
        node_config::rules::check_http_url(e).map_err(|r| InputError::new("--endpoints", format!("[{i}]"), r))?;
    }
    if !cluster.etcd.tls {
        return Etcd::new(endpoints, None);
    }
    let dir = match &access.pki {
        Some(d) => d.clone(),
        None => pki::default_dir(&cluster.name)?,
    };
    let ca = Pki::load(&dir)?;
    let admin = ca.issue_admin();
    Etcd::new(endpoints, Some(ClientTls { ca: ca.trust().to_owned(), cert: admin.cert, key: admin.key }))
}

/// `policy apply -f`: every object checked first (one bad object: exit 2,
/// nothing stored), then all put in one transaction.
pub fn apply(access: &EtcdAccess, path: &Path, out: &mut dyn Write) -> Result<()> {
    let m = load_manifests(path).map_err(input)?;
    let etcd = connect(access)?;
    let mut kvs = Vec::new();
    for n in &m.namespaces {
        kvs.push((namespace_key(&n.metadata.name), serde_json::to_vec(n)?));
    }
    for p in &m.policies {
        kvs.push((policy_key(p.namespace(), &p.metadata.name), serde_json::to_vec(p)?));
    }
    etcd.put_all(&kvs).context("storing the policies in etcd")?;
    for n in &m.namespaces {
        writeln!(out, "namespace/{} applied", n.metadata.name)?;
    }
    for p in &m.policies {
        writeln!(out, "networkpolicy/{}/{} applied", p.namespace(), p.metadata.name)?;
    }
    Ok(())
}

/// `NAMESPACE/NAME`, both Kubernetes names.
fn parse_id(id: &str) -> Result<(String, String), InputError> {
    let bad = |r: &str| InputError::new(id.escape_debug().to_string(), "", r);
    let (ns, name) = id.split_once('/').ok_or_else(|| bad("expected NAMESPACE/NAME"))?;
    // The rule `apply` holds names to, so whatever it stored can be named.
    if !imgbuild_policy::is_object_name(ns) || !imgbuild_policy::is_object_name(name) {
        return Err(bad("not NAMESPACE/NAME (lower-case letters, digits, '-' and '.')"));
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// `policy get [NS/NAME]`: the stored NetworkPolicies as YAML documents.
pub fn get(access: &EtcdAccess, id: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let wanted = id.map(parse_id).transpose()?;
    let etcd = connect(access)?;
    let prefix = match &wanted {
        Some((ns, name)) => policy_key(ns, name),
        None => format!("{PREFIX}networkpolicies/"),
    };
    let found: Vec<_> = etcd.range(&prefix)?.into_iter().filter(|(k, _)| wanted.is_none() || *k == prefix).collect();
    // Anyone with a node certificate can write under the prefix: an entry
    // that is not a valid policy stored under its own name is named and
    // skipped, and the rest are printed.
    let policies: Vec<NetworkPolicy> = found
        .iter()
        .filter_map(|(key, value)| match stored_policy(key, value) {
            Ok(p) => Some(p),
            Err(why) => {
                crate::ui::warn(&format!("skipping etcd key {}: {why}", key.escape_debug()));
                None
            }
        })
        .collect();
    if policies.is_empty() {
        if let Some(id) = id {
            bail!("networkpolicy {id} not found");
        }
    }
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            writeln!(out, "---")?;
        }
        write!(out, "{}", serde_yaml_ng::to_string(&p).context("writing YAML")?)?;
    }
    Ok(())
}

/// `policy delete NS/NAME`.
pub fn delete(access: &EtcdAccess, id: &str, out: &mut dyn Write) -> Result<()> {
    let (ns, name) = parse_id(id)?;
    let etcd = connect(access)?;
    if etcd.delete(&policy_key(&ns, &name))? == 0 {
        bail!("networkpolicy {ns}/{name} not found");
    }
    writeln!(out, "networkpolicy/{ns}/{name} deleted")?;
    Ok(())
}

/// `policy label NS/NAME CHANGE...`: the pod's labels (as its endpoint
/// in etcd has them) changed and stored under `podlabels/`, which every
/// agent takes in place of the runtime's.
pub fn label(access: &EtcdAccess, id: &str, changes: &[String], out: &mut dyn Write) -> Result<()> {
    let (ns, name) = parse_id(id)?;
    let mut edits: Vec<(String, Option<String>)> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let at = format!("[{i}]");
        let edit = match (c.split_once('='), c.strip_suffix('-')) {
            (Some((k, v)), _) => (k.to_owned(), Some(v.to_owned())),
            (None, Some(k)) => (k.to_owned(), None),
            (None, None) => return Err(InputError::new("CHANGE", at, "expected KEY=VALUE or KEY-").into()),
        };
        imgbuild_policy::check_label(&edit.0, edit.1.as_deref().unwrap_or(""), &at)
            .map_err(|(field, reason)| InputError::new("CHANGE", field, reason))?;
        edits.push(edit);
    }
    let etcd = connect(access)?;
    let kvs = etcd.range(PREFIX)?;
    let snap = Snapshot::from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let mut labels = match snap.pod_labels.get(&(ns.clone(), name.clone())) {
        Some(l) => l.clone(),
        None => snap
            .endpoints
            .iter()
            .find(|e| e.namespace == ns && e.name == name)
            .map(|e| e.labels.clone())
            .with_context(|| format!("pod {ns}/{name} not found: no node has published its endpoint"))?,
    };
    for (k, v) in edits {
        match v {
            Some(v) => labels.insert(k, v),
            None => labels.remove(&k),
        };
    }
    etcd.put_all(&[(pod_labels_key(&ns, &name), serde_json::to_vec(&labels)?)])
        .context("storing the pod's labels in etcd")?;
    writeln!(out, "pod/{ns}/{name} labeled")?;
    Ok(())
}

fn input(e: Invalid) -> InputError {
    InputError::new(e.origin, e.field, e.reason)
}

/// `policy test`: writes one line `FROM TO PORT/PROTO allow|deny` per
/// ordered pair of distinct pods and port (`ports`, else each destination's
/// own) to `out`, sorted. Lines are made in order (pods by id, ports by
/// their text; a space sorts before any character of an id), so none is
/// held: the output can be far larger than memory.
pub fn test(pods: &Path, policies: &Path, ports: Option<&[(u16, Protocol)]>, out: &mut dyn Write) -> Result<()> {
    let mut pods_file = load_pods(pods).map_err(input)?;
    let manifests = load_manifests(policies).map_err(input)?;
    let cluster = Cluster::new(manifests.policies, &manifests.namespaces, &pods_file.namespaces);
    pods_file.pods.sort_by_key(|p| p.id());
    let mut out = std::io::BufWriter::new(out);
    for from in &pods_file.pods {
        for to in pods_file.pods.iter().filter(|to| to.id() != from.id()) {
            let own: Vec<(u16, Protocol)> = to.ports.iter().map(|p| (p.port, p.protocol)).collect();
            let mut tested: Vec<(String, u16, Protocol)> = ports
                .map_or(own, <[_]>::to_vec)
                .into_iter()
                .map(|(port, proto)| (format!("{port}/{}", proto.as_str()), port, proto))
                .collect();
            tested.sort();
            tested.dedup();
            for (text, port, proto) in tested {
                let v = cluster.verdict(from, to, port, proto);
                writeln!(out, "{} {} {text} {}", from.id(), to.id(), v.as_str()).context("writing the verdicts")?;
            }
        }
    }
    out.flush().context("writing the verdicts")
}
