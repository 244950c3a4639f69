//! Real-consumer tests: every config we emit passes `ignition-validate` and
//! is applied by the real Ignition (`files` stage into a temp root), after
//! which the agent it installed is static, runs, and reads its config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{agent_path, imgbuild_with_agent, require_tool, run_ok, serve, TEST_KERNEL};

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// Runs Ignition's fetch and files stages for `config` into `root`.
/// Returns the files stage's log.
fn apply(config: &Path, root: &Path) -> (bool, String) {
    require_tool(IGNITION);
    // Ignition relabels for SELinux at the end of `files` unless told it is off.
    std::fs::create_dir_all(root.join("etc/selinux")).unwrap();
    std::fs::write(root.join("etc/selinux/config"), "SELINUX=disabled\nSELINUXTYPE=targeted\n").unwrap();
    let cache = root.with_extension("cache.json");
    let mut log = String::new();
    let mut ok = true;
    for stage in ["fetch", "files"] {
        let out = Command::new(IGNITION)
            .args(["-platform", "file", "-stage", stage, "-log-to-stdout", "-root"])
            .arg(root)
            .arg("-config-cache")
            .arg(&cache)
            .env("IGNITION_CONFIG_FILE", config)
            .output()
            .unwrap();
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        ok &= out.status.success();
    }
    (ok, log)
}

/// The only failure we accept is the final SELinux relabel, which needs the
/// host's `setfiles`; everything before it must have passed.
fn assert_applied(log: &str) {
    let critical: Vec<&str> = log.lines().filter(|l| l.starts_with("CRITICAL")).collect();
    assert!(critical.iter().all(|l| l.contains("relabel")), "Ignition failed:\n{log}");
    assert!(log.contains("fetch: fetch passed"), "{log}");
    assert!(log.contains("files: op(") && !log.contains("[failed]   writing"), "{log}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

fn build(role: &str, out: &Path, extra: &[&str]) {
    run_ok(imgbuild_with_agent().args(["--role", role, "--kernel", TEST_KERNEL, "--out"]).arg(out).args(extra));
}

fn check_installed_node(root: &Path, node: &str, role: &str) {
    let agent = root.join("opt/bin/node-agent");
    assert_eq!(mode(&agent), 0o755);
    let needs = imgbuild::image::elf::needs(&std::fs::read(&agent).unwrap()).unwrap();
    assert!(needs.is_static(), "installed agent is not static: {needs:?}");
    assert_eq!(mode(&root.join("etc/node-agent/config.json")), 0o600);
    let out = run_ok(Command::new(&agent).arg("check").arg("--config").arg(root.join("etc/node-agent/config.json")));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("node {node} role {role}")), "{said}");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/node-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/bin/node-agent run --config /etc/node-agent/config.json"), "{unit}");
    let preset = std::fs::read_to_string(root.join("etc/systemd/system-preset/20-ignition.preset")).unwrap();
    assert!(preset.lines().any(|l| l == "enable node-agent.service"), "{preset}");
    assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).unwrap(), format!("{node}\n"));
}

#[test]
fn every_role_validates_and_applies() {
    require_tool("ignition-validate");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for role in ["etcd", "master", "worker"] {
        build(role, &out, &[]);
    }
    let nodes = [("etcd-1", "etcd"), ("master-1", "master"), ("worker-1", "worker"), ("worker-2", "worker")];
    for (node, role) in nodes {
        let ign = out.join(node).join(format!("{node}.ign"));
        let v = Command::new("ignition-validate").arg(&ign).output().unwrap();
        assert!(v.status.success() && v.stdout.is_empty() && v.stderr.is_empty(), "{node}: {v:?}");
        let root = tmp.path().join(format!("root-{node}"));
        let (_, log) = apply(&ign, &root);
        assert_applied(&log);
        check_installed_node(&root, node, role);
        let etcd_dropin = root.join("etc/systemd/system/etcd-member.service.d/20-imgbuild.conf");
        assert_eq!(etcd_dropin.exists(), role == "etcd", "{node}");
    }
    let dropin = std::fs::read_to_string(
        tmp.path().join("root-etcd-1/etc/systemd/system/etcd-member.service.d/20-imgbuild.conf"),
    )
    .unwrap();
    assert!(dropin.contains("Environment=\"ETCD_INITIAL_CLUSTER=etcd-1=https://172.17.8.101:2380\""), "{dropin}");
    assert!(dropin.contains("Environment=\"ETCD_CLIENT_CERT_AUTH=true\""), "{dropin}");
    // The member's key is etcd's alone (etcd-member runs as user etcd).
    let key = tmp.path().join("root-etcd-1/etc/ssl/etcd/etcd.key");
    assert_eq!(mode(&key), 0o600);
    let meta = std::fs::metadata(&key).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (232, 232), "Flatcar's etcd user and group");
    // Only etcd nodes get a member key; every node gets its own client key.
    assert!(!tmp.path().join("root-worker-1/etc/ssl/etcd").exists());
}

#[test]
fn remote_agent_is_fetched_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = std::fs::read(agent_path()).unwrap();

    let good = serve(agent.clone());
    let out = tmp.path().join("good");
    build("worker", &out, &["--agent-url", &good]);
    let ign = out.join("worker-1/worker-1.ign");
    assert!(std::fs::metadata(&ign).unwrap().len() < 16 * 1024, "remote-mode config should be small");
    assert_eq!(std::fs::read(out.join("worker-1/node-agent")).unwrap(), agent);
    let root = tmp.path().join("root-good");
    let (_, log) = apply(&ign, &root);
    assert_applied(&log);
    check_installed_node(&root, "worker-1", "worker");

    // A server handing out other bytes must be refused by the sha512 check.
    let mut tampered = agent;
    tampered[100] ^= 0xff;
    let evil = serve(tampered);
    let out = tmp.path().join("evil");
    build("worker", &out, &["--agent-url", &evil]);
    let root: PathBuf = tmp.path().join("root-evil");
    let (ok, log) = apply(&out.join("worker-1/worker-1.ign"), &root);
    assert!(!ok, "tampered agent was accepted:\n{log}");
    assert!(log.contains("hash verification failed") || log.contains("mismatch"), "{log}");
    assert!(!root.join("opt/bin/node-agent").exists());
}

/// The remote-artifact stub: real Ignition fetches the full config it
/// names, checks its sha512, and applies it; a tampered one is refused.
#[test]
fn merge_stub_fetches_the_full_config_and_verifies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    build("worker", &plain, &[]);
    let full = std::fs::read(plain.join("worker-1/worker-1.ign")).unwrap();

    let good = serve(full.clone());
    let out = tmp.path().join("good");
    build("worker", &out, &["--stub-url", &good]);
    let stub = out.join("worker-1/worker-1.stub.ign");
    assert!(std::fs::metadata(&stub).unwrap().len() < 1024, "the stub must fit small user-data limits");
    let v = Command::new("ignition-validate").arg(&stub).output().unwrap();
    assert!(v.status.success(), "{v:?}");
    let root = tmp.path().join("root-good");
    let (_, log) = apply(&stub, &root);
    assert_applied(&log);
    check_installed_node(&root, "worker-1", "worker");

    let mut tampered = full;
    let i = tampered.len() / 2;
    tampered[i] ^= 1;
    let evil = serve(tampered);
    let out = tmp.path().join("evil");
    build("worker", &out, &["--stub-url", &evil]);
    let root = tmp.path().join("root-evil");
    let (ok, log) = apply(&out.join("worker-1/worker-1.stub.ign"), &root);
    assert!(!ok && log.contains("hash verification failed"), "{log}");
    assert!(!root.join("opt/bin/node-agent").exists());
}
