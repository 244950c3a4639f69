//! `imgbuild up --check` on the reference cluster: four VMs from our own
//! images, etcd bootstrapped by the agent, and a probe pod on every worker
//! reaching every other worker's across the VXLAN overlay.

mod common;

use common::{imgbuild_with_agent, TEST_KERNEL};

/// One cluster at a time: two would share these two cores eight VMs deep.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `imgbuild up --check` with `cluster` (the reference cluster when None);
/// asserts it passed on every node with an untainted kernel and tore down.
/// Returns every node's console.
fn up_check(cluster: Option<&std::path::Path>, nodes: &[&str], kernel: Option<&str>) -> String {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cmd = imgbuild_with_agent();
    cmd.args(["up", "--check", "--timeout", "300", "--out"]).arg(&out);
    if let Some(k) = kernel {
        cmd.args(["--kernel", k]);
    }
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
    // The accelerator, and why: KVM only where its probe booted a kernel in time.
    let accel = stderr.lines().find(|l| l.starts_with("imgbuild: accelerator: ")).expect("no accelerator line");
    assert!(
        accel.starts_with("imgbuild: accelerator: kvm (KVM booted a kernel in ")
            || accel.starts_with("imgbuild: accelerator: tcg ("),
        "{accel}"
    );
    // No kernel WARN, unsigned module or oops on the way (the agent says so).
    assert!(!consoles.contains("the kernel is tainted"), "{consoles}");
    assert!(stdout.contains(&format!("stopped {} VMs", nodes.len())), "{stdout}");
    // Torn down: no namespace, no pid files left.
    assert!(!out.join(".up/netns").exists());
    consoles
}

#[test]
fn up_check_passes_on_the_reference_cluster() {
    let consoles = up_check(None, &["etcd-1", "master-1", "worker-1", "worker-2"], Some(TEST_KERNEL));
    // NetworkPolicy enforcement is on: each node with pods applied its
    // table (the probe pods' CNI ADD waits for it).
    assert_eq!(consoles.matches("policy: table applied").count(), 3, "{consoles}");
    // Under etcd's authentication: each node's certificate is its user.
    assert!(consoles.contains("etcd authentication on: 3 node users"), "{consoles}");
}

/// Three etcd members (TLS between them: peer certificates from the
/// cluster CA) and two workers.
#[test]
fn up_check_passes_with_three_etcd_members() {
    let tmp = tempfile::tempdir().unwrap();
    let text = imgbuild::cluster::DEFAULT_TOML.replace(
        "[[node]]\nname = \"master-1\"\nrole = \"master\"\nip = \"172.17.8.102\"\n",
        "[[node]]\nname = \"etcd-2\"\nrole = \"etcd\"\nip = \"172.17.8.105\"\n\n\
         [[node]]\nname = \"etcd-3\"\nrole = \"etcd\"\nip = \"172.17.8.106\"\n",
    );
    let cluster = tmp.path().join("three.toml");
    // The runtime is proven on the reference cluster; here it would only
    // add a containerd start per worker under TCG.
    std::fs::write(&cluster, common::without_runtime(&text)).unwrap();
    let consoles = up_check(Some(&cluster), &["etcd-1", "etcd-2", "etcd-3", "worker-1", "worker-2"], Some(TEST_KERNEL));
    assert_eq!(consoles.matches("node-agent: ready role=etcd").count(), 3, "{consoles}");
    // Each member makes the users (the same ones) before it says ready.
    assert_eq!(consoles.matches("etcd authentication on: 2 node users").count(), 3, "{consoles}");
}

/// flannel's default rules, iptables chains, from the image's own
/// iptables-restore (the reference cluster uses an nftables table); the
/// workers with the hardware driver set, so on Debian's generic kernel and
/// an emulated Intel e1000e NIC, etcd-1 on the cloud kernel and virtio.
#[test]
fn up_check_passes_with_iptables_rules_and_e1000e_workers() {
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
    let text = text.replace("role = \"worker\"\n", "role = \"worker\"\ndrivers = \"hardware\"\n");
    let cluster = tmp.path().join("iptables.toml");
    std::fs::write(&cluster, common::without_runtime(&text)).unwrap();
    // No --kernel: each node's driver set picks its kernel.
    let consoles = up_check(Some(&cluster), &["etcd-1", "worker-1", "worker-2"], None);
    for worker in consoles.split("--- ").filter(|c| c.starts_with("worker-")) {
        let coldplug = worker.lines().find(|l| l.contains("coldplug: loaded")).unwrap_or_default();
        assert!(coldplug.contains(" e1000e"), "{worker}");
        let kernel =
            worker.lines().map(str::trim_end).find(|l| l.starts_with("node-agent: kernel ")).unwrap_or_default();
        assert!(kernel.ends_with("-amd64") && !kernel.ends_with("-cloud-amd64"), "{worker}");
    }
}

#[test]
fn up_check_fails_with_the_reason_when_it_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cluster = common::cluster_with_images(tmp.path(), "containerd = false");
    let res = imgbuild_with_agent()
        .args(["up", "--check", "--timeout", "3", "--kernel", TEST_KERNEL, "--out"])
        .arg(&out)
        .arg("--cluster")
        .arg(&cluster)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out after 3s: not ready:"), "{stderr}");
    // --json: the report alone on stdout, saying what failed.
    let res = imgbuild_with_agent()
        .args(["up", "--check", "--json", "--timeout", "3", "--kernel", TEST_KERNEL, "--out"])
        .arg(tmp.path().join("out-json"))
        .arg("--cluster")
        .arg(&cluster)
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

/// The KVM probe is bounded however KVM behaves: on a host where a KVM
/// guest hangs (these machines) it gives up within its limit and says why;
/// where KVM works it has booted the kernel to its first panic.
#[test]
fn the_kvm_probe_never_hangs_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    common::run_ok(imgbuild_with_agent().args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--out"]).arg(&out));
    let kernel = out.join("worker-1/vmlinuz");
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(2);
    let got = imgbuild::accel::probe(&kernel, limit);
    assert!(start.elapsed() < limit + std::time::Duration::from_secs(2), "took {:?}: {got:?}", start.elapsed());
    match got {
        Ok(took) => assert!(took < limit),
        Err(why) => {
            assert!(why == "KVM did not boot a kernel within 2s" || why.starts_with("no usable /dev/kvm"), "{why}")
        }
    }
    // A file that is no kernel never counts as KVM working.
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"not a kernel").unwrap();
    assert!(imgbuild::accel::probe(&junk, limit).is_err());
}
