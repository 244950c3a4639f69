//! `imgbuild up --check` on the reference cluster: four VMs from our own
//! images, etcd bootstrapped by the agent, and a probe pod on every worker
//! reaching every other worker's across the VXLAN overlay.

mod common;

use common::{imgbuild_with_agent, TEST_KERNEL};

#[test]
fn up_check_passes_on_the_reference_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let res = imgbuild_with_agent()
        .args(["up", "--check", "--timeout", "300", "--kernel", TEST_KERNEL, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let consoles: String = ["etcd-1", "master-1", "worker-1", "worker-2"]
        .iter()
        .map(|n| {
            format!("--- {n}\n{}", std::fs::read_to_string(out.join(format!(".up/{n}.console"))).unwrap_or_default())
        })
        .collect();
    assert!(res.status.success(), "{stdout}\n{stderr}\n{consoles}");
    println!("{stdout}");
    for node in ["etcd-1", "master-1", "worker-1", "worker-2"] {
        assert!(stdout.lines().any(|l| l.starts_with(node) && l.contains('s')), "report lacks {node}:\n{stdout}");
    }
    assert!(stdout.contains("check passed"), "{stdout}");
    // No kernel WARN, unsigned module or oops on the way (the agent says so).
    assert!(!consoles.contains("the kernel is tainted"), "{consoles}");
    assert!(stdout.contains("stopped 4 VMs"), "{stdout}");
    // Torn down: no namespace, no pid files left.
    assert!(!out.join(".up/netns").exists());
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
    assert!(!out.join(".up/netns").exists(), "a failed check must tear the cluster down");
}
