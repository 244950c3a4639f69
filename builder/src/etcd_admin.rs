//! `imgbuild etcd status|add|remove|snapshot|restore`: the cluster's etcd
//! membership and data over time, as its administrator (an admin
//! certificate from the cluster CA; see `policy::connect`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use node_config::Role;

use crate::cluster::{Cluster, Node};
use crate::cmdline::EtcdAccess;
use crate::error::InputError;
use crate::etcd::Etcd;

fn cluster_of(access: &EtcdAccess) -> Result<Cluster> {
    Ok(crate::build::load_cluster(access.cluster.as_deref())?)
}

/// An etcd node of the cluster file, by name.
fn etcd_node<'a>(cluster: &'a Cluster, name: &str) -> Result<&'a Node, InputError> {
    match cluster.node(name) {
        Some(n) if n.role == Role::Etcd => Ok(n),
        Some(_) => Err(InputError::new(name, "", "is not an etcd node of the cluster file")),
        None => Err(InputError::new(name, "", "is no node of the cluster file")),
    }
}

fn peer_url(cluster: &Cluster, n: &Node) -> String {
    format!("{}://{}:{}", cluster.etcd.scheme(), n.static_ip(), cluster.etcd.peer_port)
}

/// `etcd status`: the members, then each endpoint's own view. Exit 1 when
/// an endpoint does not answer.
pub fn status(access: &EtcdAccess, out: &mut dyn Write) -> Result<()> {
    let etcd = crate::policy::connect(access)?;
    let members = etcd.members()?;
    writeln!(out, "{:<12} {:<17} {:<30} CLIENT URLS", "MEMBER", "ID", "PEER URLS")?;
    for m in &members {
        let name = if m.name.is_empty() { "(not started)" } else { &m.name };
        writeln!(out, "{:<12} {:<17x} {:<30} {}", name, m.id, m.peer_urls.join(","), m.client_urls.join(","))?;
    }
    writeln!(out, "{:<30} {:<8} {:>10} {:<17} RAFT TERM", "ENDPOINT", "VERSION", "DB BYTES", "LEADER")?;
    let mut down = Vec::new();
    for (endpoint, st) in etcd.statuses() {
        match st {
            Ok(s) => {
                writeln!(out, "{:<30} {:<8} {:>10} {:<17x} {}", endpoint, s.version, s.db_size, s.leader, s.raft_term)?;
            }
            Err(e) => {
                writeln!(out, "{endpoint:<30} unreachable: {e:#}")?;
                down.push(endpoint);
            }
        }
    }
    if !down.is_empty() {
        bail!("not answering: {}", down.join(", "));
    }
    Ok(())
}

/// `etcd add NODE`: makes an etcd node of the cluster file a member, to
/// join the running cluster (started with `--initial-cluster-state existing`).
pub fn add(access: &EtcdAccess, name: &str, out: &mut dyn Write) -> Result<()> {
    let cluster = cluster_of(access)?;
    let url = peer_url(&cluster, etcd_node(&cluster, name)?);
    let etcd = crate::policy::connect(access)?;
    if let Some(m) = etcd.members()?.iter().find(|m| m.peer_urls.contains(&url) || m.name == name) {
        bail!("{name} is already a member ({:x}, {})", m.id, m.peer_urls.join(","));
    }
    // etcd refuses an add until the last member added has been connected a
    // few seconds ("unhealthy cluster"); that passes by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let m = loop {
        match etcd.member_add(&url) {
            Err(e) if format!("{e:#}").contains("unhealthy cluster") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => break other?,
        }
    };
    writeln!(out, "added {name} as member {:x} at {url}; boot it to join the running cluster", m.id)?;
    Ok(())
}

/// `etcd remove NODE`: by name, or by the peer URL the cluster file gives it
/// (a member that never started has no name). Never the last member.
pub fn remove(access: &EtcdAccess, name: &str, out: &mut dyn Write) -> Result<()> {
    let cluster = cluster_of(access)?;
    let url = cluster.node(name).map(|n| peer_url(&cluster, n));
    let etcd = crate::policy::connect(access)?;
    let members = etcd.members()?;
    let Some(m) = members.iter().find(|m| m.name == name || url.as_ref().is_some_and(|u| m.peer_urls.contains(u)))
    else {
        bail!("{name} is not a member");
    };
    if members.len() == 1 {
        bail!("{name} is the only member: removing it would end the cluster");
    }
    etcd.member_remove(m.id)?;
    writeln!(out, "removed {name} (member {:x}); wipe its data before it joins again", m.id)?;
    Ok(())
}

/// `etcd access`: every node of the cluster file gets its etcd user (a node
/// added to the file after the members started has none until then), and
/// authentication is on. Users of nodes no longer in the file are kept.
pub fn access(access: &EtcdAccess, out: &mut dyn Write) -> Result<()> {
    let cluster = cluster_of(access)?;
    if !cluster.etcd.tls {
        let file = access.cluster.as_deref().map_or("the embedded cluster".into(), |p| p.display().to_string());
        return Err(InputError::new(
            file,
            "etcd.tls",
            "is false: etcd takes user names from client certificates, and this cluster has none",
        )
        .into());
    }
    let etcd = crate::policy::connect(access)?;
    let plan = crate::plan::etcd_access(&cluster);
    if let Some(why) = etcd.ensure_access(&plan)? {
        crate::ui::warn(&why);
    }
    writeln!(
        out,
        "etcd authentication on: {} administrators ({}), {} nodes ({})",
        plan.admins.len(),
        plan.admins.join(", "),
        plan.nodes.len(),
        plan.nodes.join(", ")
    )?;
    Ok(())
}

/// `etcd snapshot FILE`: the database as etcd snapshots it, written to a
/// temporary file (0600: it holds every key) and renamed into place.
pub fn snapshot(access: &EtcdAccess, file: &Path, out: &mut dyn Write) -> Result<()> {
    let etcd: Etcd = crate::policy::connect(access)?;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let size = etcd.snapshot(&mut tmp)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file).with_context(|| format!("writing {}", file.display()))?;
    writeln!(out, "wrote {} ({size} bytes)", file.display())?;
    Ok(())
}

/// `etcd restore FILE --node NODE --data-dir DIR`: a member's data folder
/// from a snapshot, with the cluster file's etcd nodes as the membership
/// (etcdctl's `snapshot restore`, which rewrites the database's cluster
/// identity: that cannot be done by copying the file).
pub fn restore(access: &EtcdAccess, file: &Path, name: &str, data_dir: &Path, out: &mut dyn Write) -> Result<()> {
    let cluster = cluster_of(access)?;
    let node = etcd_node(&cluster, name)?;
    if data_dir.exists() {
        return Err(InputError::new(
            "--data-dir",
            "",
            format!("{} exists; restore makes a new one", data_dir.display()),
        )
        .into());
    }
    let initial: Vec<String> = cluster.etcd_nodes().map(|n| format!("{}={}", n.name, peer_url(&cluster, n))).collect();
    let result = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(file)
        .arg(format!("--name={name}"))
        .arg(format!("--initial-cluster={}", initial.join(",")))
        .arg(format!("--initial-cluster-token={}", cluster.name))
        .arg(format!("--initial-advertise-peer-urls={}", peer_url(&cluster, node)))
        .arg(format!("--data-dir={}", data_dir.display()))
        .output()
        .context("running etcdctl (Debian's etcd-client) to restore the snapshot")?;
    if !result.status.success() {
        bail!("etcdctl snapshot restore: {}", String::from_utf8_lossy(&result.stderr).trim());
    }
    writeln!(out, "restored {} into {} for member {name}", file.display(), data_dir.display())?;
    Ok(())
}
