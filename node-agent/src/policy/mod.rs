//! Kubernetes NetworkPolicy on this node: the pods the CNI endpoint plugin
//! recorded get their identity (labels, named ports) from the container
//! runtime over CRI, are published in etcd for every other node, and one
//! nftables table, compiled from etcd's policies, namespaces and endpoints
//! by `imgbuild_policy::nft`, is replaced in one transaction on each change.
//! Follows etcd by watch, resyncing after gaps and outages; the table is
//! never removed, so an agent restart leaves the pods as they were.

pub mod plugin;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use imgbuild_policy::nft::Node;
use imgbuild_policy::store::{endpoints_prefix, Endpoint, Snapshot, PREFIX};
use imgbuild_policy::{Cluster, PodPort, Protocol};
use node_config::PolicyEnforcement;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::etcd::Client;
use crate::log;

/// What the plugin records of a pod on ADD, one file per sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub sandbox: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

/// kubelet's annotation with a container's ports (and their names).
const PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";
/// A record the runtime does not know after this long is not a CRI pod
/// (`node-agent pod add`): it keeps the identity CNI_ARGS gave it.
const NOT_CRI_AFTER: Duration = Duration::from_secs(30);

/// Puts the plugin in the CNI plugin folder: a link to this binary, made
/// under a temporary name and renamed over any old one.
pub fn install_plugin(bin_dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the agent's own binary")?;
    let link = bin_dir.join(plugin::NAME);
    let tmp = bin_dir.join(format!(".{}.{}", plugin::NAME, std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&exe, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("installing {}", link.display()))
}

/// The endpoints the plugin recorded (bad or foreign files are skipped).
fn read_records(dir: &Path) -> Vec<(Record, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        if !meta.is_file() || meta.len() > 4096 {
            continue;
        }
        let parsed = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok());
        match parsed {
            Some(r) if r.sandbox == id => out.push((r, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH))),
            _ => log::warn(&format!("policy: skipping {}: not an endpoint record", e.path().display())),
        }
    }
    out
}

/// A pod's identity from the runtime.
#[derive(Clone)]
struct Identity {
    namespace: String,
    name: String,
    uid: String,
    labels: BTreeMap<String, String>,
    ports: Vec<PodPort>,
}

/// Every sandbox's identity, with its containers' ports.
async fn identities(socket: &Path) -> Result<HashMap<String, Identity>> {
    let mut cri = crate::runtime::cri::Cri::connect(socket).await?;
    let mut out: HashMap<String, Identity> = cri
        .sandboxes()
        .await?
        .into_iter()
        .map(|s| {
            let labels = s.labels.into_iter().collect();
            (s.id, Identity { namespace: s.namespace, name: s.name, uid: s.uid, labels, ports: Vec::new() })
        })
        .collect();
    for (sandbox, annotations) in cri.container_annotations().await? {
        if let (Some(id), Some(ports)) = (out.get_mut(&sandbox), annotations.get(PORTS_ANNOTATION)) {
            id.ports.extend(container_ports(ports));
        }
    }
    Ok(out)
}

/// kubelet's `[{"name", "containerPort", "protocol"}]`; what does not parse
/// gives no ports.
fn container_ports(json: &str) -> Vec<PodPort> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Port {
        #[serde(default)]
        name: Option<String>,
        container_port: u16,
        #[serde(default)]
        protocol: Option<String>,
    }
    let ports: Vec<Port> = serde_json::from_str(json).unwrap_or_default();
    ports
        .into_iter()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(s) => s.parse().ok()?,
            };
            Some(PodPort { name: p.name.filter(|n| !n.is_empty()), port: p.container_port, protocol })
        })
        .collect()
}

/// This node's pods: endpoints to publish, and addresses still without an
/// identity (dropped until they have one).
#[derive(Debug, Default, PartialEq)]
struct Local {
    endpoints: Vec<Endpoint>,
    pending: BTreeSet<IpAddr>,
}

/// Whether a recorded address can be a pod's on this node: IPv4, and when
/// the lease is known, inside it and not its network, gateway (the bridge)
/// or broadcast address.
fn pod_address(ip: IpAddr, subnet: Option<ipnet::Ipv4Net>) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    match subnet {
        None => !(v4.is_loopback() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        Some(net) => {
            let gateway = std::net::Ipv4Addr::from(u32::from(net.network()) + 1);
            net.contains(&v4) && v4 != net.network() && v4 != gateway && v4 != net.broadcast()
        }
    }
}

fn local_endpoints(
    node: &str,
    records: &[(Record, SystemTime)],
    ids: Option<&HashMap<String, Identity>>,
    subnet: Option<ipnet::Ipv4Net>,
    answered: bool,
) -> Local {
    let mut local = Local::default();
    for (r, made) in records {
        if !pod_address(r.ip, subnet) {
            log::warn(&format!(
                "policy: ignoring the record of sandbox {}: {} is not a pod address here",
                r.sandbox, r.ip
            ));
            continue;
        }
        let from_cri = ids.and_then(|ids| ids.get(&r.sandbox));
        let old = answered && made.elapsed().unwrap_or_default() > NOT_CRI_AFTER;
        let e = match from_cri {
            Some(id) => Endpoint {
                node: node.into(),
                sandbox: r.sandbox.clone(),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                uid: id.uid.clone(),
                ip: r.ip,
                labels: id.labels.clone(),
                ports: id.ports.clone(),
            },
            // No runtime to ask, or it never heard of this sandbox.
            None if ids.is_none() || old => Endpoint {
                node: node.into(),
                sandbox: r.sandbox.clone(),
                namespace: if r.namespace.is_empty() { "default".into() } else { r.namespace.clone() },
                name: if r.name.is_empty() {
                    format!("sandbox-{}", &r.sandbox[..r.sandbox.len().min(12)])
                } else {
                    r.name.clone()
                },
                uid: r.uid.clone(),
                ip: r.ip,
                labels: BTreeMap::new(),
                ports: Vec::new(),
            },
            None => {
                local.pending.insert(r.ip);
                continue;
            }
        };
        match e.check() {
            Ok(()) => local.endpoints.push(e),
            Err(why) => {
                log::warn(&format!(
                    "policy: pod {}/{} ({}): {why}; its traffic stays dropped",
                    e.namespace, e.name, e.ip
                ));
                local.pending.insert(r.ip);
            }
        }
    }
    local
}

/// The table for `local`, from etcd's `kvs` with this node's endpoints
/// taken from `local` rather than etcd.
fn script(node: &str, kvs: &BTreeMap<String, Vec<u8>>, local: &Local, warned: &mut BTreeSet<String>) -> String {
    let mine = endpoints_prefix(node);
    let others = kvs.iter().filter(|(k, _)| !k.starts_with(&mine));
    let mut snap = Snapshot::from_kvs(others.map(|(k, v)| (k.as_str(), v.as_slice())));
    // This node is the authority on its own pods' addresses: another
    // node's endpoint claiming one (to give it other labels, or to make
    // the pod unknown and so unisolated) is not believed.
    let local_ips: BTreeSet<IpAddr> =
        local.endpoints.iter().map(|e| e.ip).chain(local.pending.iter().copied()).collect();
    let (clashing, remote): (Vec<Endpoint>, Vec<Endpoint>) =
        snap.endpoints.drain(..).partition(|e| local_ips.contains(&e.ip));
    snap.skipped.extend(clashing.iter().map(|e| (e.key(), format!("{} is a pod of this node", e.ip))));
    let mut endpoints = remote;
    for e in &local.endpoints {
        let mut e = e.clone();
        if let Some(l) = snap.pod_labels.get(&(e.namespace.clone(), e.name.clone())) {
            e.labels = l.clone();
        }
        endpoints.push(e);
    }
    for (key, why) in &snap.skipped {
        if warned.insert(format!("{key}: {why}")) {
            log::warn(&format!("policy: skipping etcd key {}: {why}", key.escape_debug()));
        }
    }
    let cluster = Cluster::new(snap.policies, &snap.namespaces, &BTreeMap::new());
    let all: Vec<_> = endpoints.iter().map(Endpoint::pod).collect();
    let local_pods = all.iter().filter(|p| local_ips.contains(&p.ip)).collect();
    cluster.nft_script(&Node { local: local_pods, pending: local.pending.clone() }, &all)
}

async fn apply(nft: &Path, script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new(nft)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", nft.display()))?;
    child.stdin.take().context("nft's stdin")?.write_all(script.as_bytes()).await?;
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The enforcer's state between events.
struct Enforcer {
    spec: PolicyEnforcement,
    node: String,
    client: Client,
    cri: Option<PathBuf>,
    /// Where subnet.env tells this node's lease.
    run_flannel: PathBuf,
    /// What the runtime last said of each recorded sandbox.
    named: HashMap<String, Identity>,
    kvs: BTreeMap<String, Vec<u8>>,
    applied: Option<String>,
    warned: BTreeSet<String>,
    pending: bool,
}

impl Enforcer {
    /// Everything under the prefix, afresh; returns the revision.
    async fn resync(&mut self) -> Result<i64> {
        let (kvs, rev) = self.client.get_prefix(PREFIX).await?;
        self.kvs = kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value)).collect();
        Ok(rev)
    }

    /// Reads the records and the runtime, publishes this node's endpoints,
    /// and applies the table if it changed. Ok once the table is in place.
    async fn reconcile(&mut self) -> Result<()> {
        let records = read_records(&self.spec.endpoints_dir());
        let mut answered = true;
        let ids = match &self.cri {
            None => None,
            Some(socket) => {
                let now = match identities(socket).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        log::debug(&format!("policy: asking the runtime: {e:#}"));
                        answered = false;
                        HashMap::new()
                    }
                };
                // A pod the runtime named keeps that name while the runtime
                // is away (containerd restarting): never its labels dropped,
                // which could leave it unisolated.
                let mut known = std::mem::take(&mut self.named);
                known.extend(now);
                known.retain(|sandbox, _| records.iter().any(|(r, _)| &r.sandbox == sandbox));
                self.named = known.clone();
                Some(known)
            }
        };
        let subnet = crate::cni::SubnetEnv::previous_subnet(&self.run_flannel);
        // Unanswered, no record is taken as a pod the runtime never heard of.
        let local = local_endpoints(&self.node, &records, ids.as_ref(), subnet, answered);
        self.pending = !local.pending.is_empty();
        if let Err(e) = self.publish(&local).await {
            log::warn(&format!("policy: publishing this node's endpoints: {e:#}"));
        }
        let script = script(&self.node, &self.kvs, &local, &mut self.warned);
        if self.applied.as_deref() != Some(script.as_str()) {
            apply(&self.spec.nft, &script).await.context("applying the policy table")?;
            self.applied = Some(script);
        }
        Ok(())
    }

    /// Takes a watch message's events; false when the watch lost history.
    fn take_events(&mut self, r: crate::etcd::WatchResponse, rev: &mut i64) -> bool {
        if r.canceled || r.compact_revision > 0 {
            return false;
        }
        *rev = (*rev).max(r.revision());
        for ev in r.events {
            let delete = ev.is_delete();
            let kv = ev.kv.unwrap_or_default();
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            if delete {
                self.kvs.remove(&key);
            } else {
                self.kvs.insert(key, kv.value);
            }
        }
        true
    }

    /// Puts this node's endpoints that etcd lacks or has otherwise, and
    /// deletes what it has of this node's that is gone.
    async fn publish(&mut self, local: &Local) -> Result<()> {
        let mine = endpoints_prefix(&self.node);
        let want: BTreeMap<String, Vec<u8>> =
            local.endpoints.iter().map(|e| Ok((e.key(), serde_json::to_vec(e)?))).collect::<Result<_>>()?;
        for (k, v) in &want {
            if self.kvs.get(k) != Some(v) {
                self.client.put(k, v, None).await?;
                self.kvs.insert(k.clone(), v.clone());
            }
        }
        let gone: Vec<String> =
            self.kvs.keys().filter(|k| k.starts_with(&mine) && !want.contains_key(*k)).cloned().collect();
        for k in gone {
            self.client.delete(&k).await?;
            self.kvs.remove(&k);
        }
        Ok(())
    }
}

/// Serves the plugin's `sync` requests: each is answered once a reconcile
/// after it has applied the table.
async fn listen(socket: &Path, tx: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<bool>>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener =
        tokio::net::UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of descriptors, say: wait for some to close, keep serving.
            Err(e) => {
                log::warn(&format!("policy: accepting on {}: {e}", socket.display()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut read = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, 64));
            let ok = tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line)).await;
            if !matches!(ok, Ok(Ok(_))) || line.trim_end() != "sync" {
                let _ = write.write_all(b"error: expected sync\n").await;
                return;
            }
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(done).await.is_err() {
                return;
            }
            let answer: &[u8] =
                if wait.await.unwrap_or(false) { b"ok\n" } else { b"error: the table was not applied\n" };
            let _ = write.write_all(answer).await;
        });
    }
}

/// Runs enforcement forever.
pub async fn run(spec: PolicyEnforcement, node: String, client: Client, cri: Option<PathBuf>, run_flannel: PathBuf) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = spec.endpoints_dir();
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
        log::error(&format!("policy: creating {}: {e}", dir.display()));
    }
    let (tx, mut syncs) = tokio::sync::mpsc::channel(64);
    let socket = spec.socket();
    tokio::spawn(async move {
        if let Err(e) = listen(&socket, tx).await {
            log::error(&format!("policy: {e:#}"));
        }
    });
    let mut e = Enforcer {
        spec,
        node,
        client,
        cri,
        run_flannel,
        named: HashMap::new(),
        kvs: BTreeMap::new(),
        applied: None,
        warned: BTreeSet::new(),
        pending: false,
    };
    let mut rev = loop {
        match e.resync().await {
            Ok(rev) => break rev,
            Err(err) => log::warn(&format!("policy: reading policies from etcd (retrying): {err:#}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut first = true;
    loop {
        let mut watch = match e.client.watch_prefix(PREFIX, rev + 1).await {
            Ok(w) => Some(w),
            Err(err) => {
                log::warn(&format!("policy: watching etcd: {err:#}"));
                None
            }
        };
        loop {
            match e.reconcile().await {
                Ok(()) if first => {
                    log::info("policy: table applied");
                    first = false;
                }
                Ok(()) => {}
                Err(err) => log::warn(&format!("policy: {err:#}")),
            }
            let tick = Duration::from_millis(if e.pending { 200 } else { 2000 });
            let lost = tokio::select! {
                msg = async { match watch.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => match msg {
                    Ok(Some(r)) => {
                        let mut lost = !e.take_events(r, &mut rev);
                        // A burst (an apply of many objects) is one table change.
                        while !lost {
                            let Some(w) = watch.as_mut() else { break };
                            match tokio::time::timeout(Duration::from_millis(2), w.next()).await {
                                Ok(Ok(Some(r))) => lost = !e.take_events(r, &mut rev),
                                Ok(_) => lost = true,
                                Err(_) => break,
                            }
                        }
                        lost
                    }
                    _ => true,
                },
                Some(done) = syncs.recv() => {
                    let ok = match e.reconcile().await {
                        Ok(()) => true,
                        Err(err) => { log::warn(&format!("policy: {err:#}")); false }
                    };
                    let _ = done.send(ok);
                    false
                }
                _ = tokio::time::sleep(tick) => watch.is_none(),
            };
            if lost {
                match e.resync().await {
                    Ok(r) => rev = r,
                    Err(err) => {
                        log::warn(&format!("policy: resyncing from etcd: {err:#}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_access_covers_the_policy_layout() {
        // What a node may write in etcd (its role) and where it publishes.
        assert_eq!(crate::etcd::keys::POLICY, imgbuild_policy::store::PREFIX);
        assert_eq!(crate::etcd::keys::endpoints_of("w1"), imgbuild_policy::store::endpoints_prefix("w1"));
    }

    fn endpoint(node: &str, sandbox: &str, ip: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            node: node.into(),
            sandbox: sandbox.into(),
            namespace: "x".into(),
            name: sandbox.into(),
            uid: String::new(),
            ip: ip.parse().unwrap(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ports: vec![],
        }
    }

    /// Another node's endpoint claiming this node's pod address is not
    /// believed: the pod stays isolated with its own labels.
    #[test]
    fn this_node_is_the_authority_on_its_pods() {
        let mine = endpoint("w1", "a", "10.1.1.2", &[("pod", "a")]);
        let forged = endpoint("w2", "f", "10.1.1.2", &[("pod", "other")]);
        let deny = br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"d","namespace":"x"},"spec":{"podSelector":{"matchLabels":{"pod":"a"}}}}"#;
        let kvs = BTreeMap::from([
            (forged.key(), serde_json::to_vec(&forged).unwrap()),
            (imgbuild_policy::store::policy_key("x", "d"), deny.to_vec()),
        ]);
        let local = Local { endpoints: vec![mine], pending: BTreeSet::new() };
        let mut warned = BTreeSet::new();
        let s = script("w1", &kvs, &local, &mut warned);
        assert!(s.contains("10.1.1.2 : jump ingress-0"), "{s}");
        assert!(warned.iter().any(|w| w.contains("is a pod of this node")), "{warned:?}");
    }

    #[test]
    fn only_pod_addresses_of_the_lease_are_taken() {
        let net: ipnet::Ipv4Net = "10.1.5.0/24".parse().unwrap();
        assert!(pod_address("10.1.5.2".parse().unwrap(), Some(net)));
        for bad in ["10.1.5.0", "10.1.5.1", "10.1.5.255", "10.1.6.2", "172.17.8.103", "::ffff:10.1.5.2"] {
            assert!(!pod_address(bad.parse().unwrap(), Some(net)), "{bad}");
        }
        for bad in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "fd00::1"] {
            assert!(!pod_address(bad.parse().unwrap(), None), "{bad}");
        }
    }

    #[test]
    fn kubelets_port_annotation() {
        let json = r#"[{"name":"serve-80-tcp","containerPort":80,"protocol":"TCP"},{"containerPort":81,"protocol":"UDP"},{"containerPort":82,"protocol":"ICMP"}]"#;
        let ports = container_ports(json);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0], PodPort { name: Some("serve-80-tcp".into()), port: 80, protocol: Protocol::Tcp });
        assert_eq!(ports[1], PodPort { name: None, port: 81, protocol: Protocol::Udp });
        assert!(container_ports("not json").is_empty());
    }

    #[test]
    fn records_wait_for_the_runtime_then_take_its_identity() {
        let r = Record {
            sandbox: "abc".into(),
            ip: "10.1.5.2".parse().unwrap(),
            namespace: "x".into(),
            name: "a".into(),
            uid: "u".into(),
        };
        let now = SystemTime::now();
        let empty = HashMap::new();
        let l = local_endpoints("w1", &[(r.clone(), now)], Some(&empty), None, true);
        assert!(l.endpoints.is_empty() && l.pending.contains(&r.ip), "fail closed until the runtime knows it");
        let ids = HashMap::from([(
            "abc".to_owned(),
            Identity {
                namespace: "x".into(),
                name: "a".into(),
                uid: "u".into(),
                labels: [("pod".into(), "a".into())].into(),
                ports: vec![],
            },
        )]);
        let l = local_endpoints("w1", &[(r.clone(), now)], Some(&ids), None, true);
        assert_eq!(l.endpoints.len(), 1);
        assert_eq!(l.endpoints[0].labels["pod"], "a");
        assert!(l.pending.is_empty());
        // The runtime away: an old record stays dropped, never unlabelled.
        let old = now - Duration::from_secs(60);
        let l = local_endpoints("w1", &[(r.clone(), old)], Some(&empty), None, false);
        assert!(l.endpoints.is_empty() && l.pending.contains(&r.ip));
        // The runtime answered and never heard of it: not a CRI pod.
        let l = local_endpoints("w1", &[(r.clone(), old)], Some(&empty), None, true);
        assert_eq!(l.endpoints.len(), 1);
        // No runtime at all: CNI_ARGS' identity, no labels.
        let l = local_endpoints("w1", &[(r, now)], None, None, true);
        assert_eq!((l.endpoints[0].namespace.as_str(), l.endpoints[0].labels.len()), ("x", 0));
    }
}
