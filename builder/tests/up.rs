//! `imgbuild up --check` on the reference cluster: four VMs from our own
//! images, etcd bootstrapped by the agent, and a probe pod on every worker
//! reaching every other worker's across the VXLAN overlay.

mod common;

use common::{imgbuild_with_agent, TEST_KERNEL};

/// One cluster at a time: two would share these two cores eight VMs deep.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `imgbuild up --check` with `cluster` (the reference cluster when None);
/// asserts it passed on every node with an untainted kernel and tore down.
fn up_check(cluster: Option<&std::path::Path>, nodes: &[&str]) {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cmd = imgbuild_with_agent();
    cmd.args(["up", "--check", "--timeout", "300", "--kernel", TEST_KERNEL, "--out"]).arg(&out);
    if let Some(c) = cluster {
        cmd.arg("--cluster").arg(c);
    }
    let res = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let consoles: String = nodes
        .iter()
        .map(|n| {
            format!("--- {n}\n{}", std::fs::read_to_string(out.join(format!(".up/{n}.console"))).unwrap_or_default())
        })
        .collect();
    assert!(res.status.success(), "{stdout}\n{stderr}\n{consoles}");
    println!("{stdout}");
    for node in nodes {
        assert!(stdout.lines().any(|l| l.starts_with(node) && l.contains('s')), "report lacks {node}:\n{stdout}");
    }
    assert!(stdout.contains("check passed"), "{stdout}");
    // A line per node and stage as it happens, with the time since boot.
    for node in nodes {
        for stage in ["booted", "config", "ready"] {
            let seen = stderr.lines().any(|l| l.starts_with("imgbuild: +") && l.contains(&format!("s {node} {stage}")));
            assert!(seen, "no progress line for {node} {stage}:\n{stderr}");
        }
    }
    // No kernel WARN, unsigned module or oops on the way (the agent says so).
    assert!(!consoles.contains("the kernel is tainted"), "{consoles}");
    assert!(stdout.contains(&format!("stopped {} VMs", nodes.len())), "{stdout}");
    // Torn down: no namespace, no pid files left.
    assert!(!out.join(".up/netns").exists());
}

#[test]
fn up_check_passes_on_the_reference_cluster() {
    up_check(None, &["etcd-1", "master-1", "worker-1", "worker-2"]);
}

/// flannel's default rules, iptables chains, from the image's own
/// iptables-restore (the reference cluster uses an nftables table).
#[test]
fn up_check_passes_with_iptables_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = imgbuild_with_agent().arg("init").arg("--out").arg(tmp.path().join("ref.toml")).output().unwrap();
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let text = std::fs::read_to_string(tmp.path().join("ref.toml")).unwrap();
    assert!(text.contains("enable_nftables = true"), "{text}");
    // Without the master: two workers are what the check needs.
    let blocks: Vec<&str> = text.split("[[node]]\n").collect();
    assert!(blocks.iter().any(|b| b.starts_with("name = \"master-1\"")), "{text}");
    let without_master = blocks.into_iter().filter(|b| !b.starts_with("name = \"master-1\"")).collect::<Vec<_>>();
    let text = without_master.join("[[node]]\n").replace("enable_nftables = true", "enable_nftables = false");
    let cluster = tmp.path().join("iptables.toml");
    std::fs::write(&cluster, text).unwrap();
    up_check(Some(&cluster), &["etcd-1", "worker-1", "worker-2"]);
}

#[test]
fn up_check_fails_with_the_reason_when_it_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let res = imgbuild_with_agent()
        .args(["up", "--check", "--timeout", "3", "--kernel", TEST_KERNEL, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out after 3s: not ready:"), "{stderr}");
    // --json: the report alone on stdout, saying what failed.
    let res = imgbuild_with_agent()
        .args(["up", "--check", "--json", "--timeout", "3", "--kernel", TEST_KERNEL, "--out"])
        .arg(tmp.path().join("out-json"))
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).expect("stdout is the JSON report alone");
    assert_eq!(report["passed"], false);
    assert!(report["error"].as_str().unwrap().contains("timed out after 3s"), "{report}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 4, "{report}");
    assert!(report["nodes"][0]["name"] == "etcd-1" && report["nodes"][0]["booted"].is_boolean(), "{report}");
    assert!(!out.join(".up/netns").exists(), "a failed check must tear the cluster down");
}
