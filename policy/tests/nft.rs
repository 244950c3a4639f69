//! The nftables table a node enforces, compiled from the test cluster
//! (tests/cluster): pinned by a golden file, and accepted by the kernel's
//! nf_tables (`nft -c` in a private network namespace) for every pod as a
//! node's only pod.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use imgbuild_policy::nft::Node;
use imgbuild_policy::{load_manifests, parse_pods, Cluster, Pod};

fn cluster() -> (Cluster, Vec<Pod>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster");
    let pods = parse_pods(&std::fs::read_to_string(dir.join("pods.yaml")).unwrap(), "pods.yaml").unwrap();
    let m = load_manifests(&dir.join("policies")).unwrap();
    (Cluster::new(m.policies, &m.namespaces, &pods.namespaces), pods.pods)
}

/// `nft -c -f -` in a network namespace of its own: the kernel checks the
/// whole transaction and commits nothing.
fn kernel_accepts(script: &str) -> Result<(), String> {
    assert!(
        nix_is_root(),
        "this test loads nftables scripts into the kernel (check mode) and needs root, as CI runs it"
    );
    let mut child = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare and nft (tests/install-deps.sh installs nftables)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn a_nodes_table_is_golden() {
    let (c, pods) = cluster();
    // The node holding 10.1.1.0/24, one of whose pods has no labels yet.
    let local: Vec<&Pod> = pods.iter().filter(|p| p.ip.to_string().starts_with("10.1.1.")).collect();
    let pending = BTreeSet::from(["10.1.1.50".parse().unwrap()]);
    let script = c.nft_script(&Node { local, pending }, &pods);
    testkit::assert_golden!("golden/node-10.1.1.nft", &script);
    kernel_accepts(&script).unwrap_or_else(|e| panic!("{e}\n{script}"));
}

#[test]
fn every_pods_table_is_accepted_by_the_kernel() {
    let (c, pods) = cluster();
    for pod in &pods {
        let script = c.nft_script(&Node { local: vec![pod], pending: BTreeSet::new() }, &pods);
        kernel_accepts(&script).unwrap_or_else(|e| panic!("{}: {e}\n{script}", pod.id()));
    }
    // A name as long as Kubernetes allows (253): nft takes 128-byte comments.
    let mut long = pods[0].clone();
    long.name = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    assert_eq!(long.name.len(), 253);
    let script = c.nft_script(&Node { local: vec![&long], pending: BTreeSet::new() }, &pods);
    kernel_accepts(&script).unwrap_or_else(|e| panic!("a long pod name: {e}\n{script}"));
    // No pods at all: the table is still there, empty.
    let script = c.nft_script(&Node { local: vec![], pending: BTreeSet::new() }, &pods);
    kernel_accepts(&script).unwrap();
}
