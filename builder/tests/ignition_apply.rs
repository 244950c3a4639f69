//! Real-consumer tests: every config we emit passes `ignition-validate` and
//! is applied by the real Ignition (`files` stage into a temp root), after
//! which the agent it installed is static, runs, and reads its config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    agent_path, apply_ignition, assert_ignition_applied, imgbuild_with_agent, require_tool, run_ok, serve, serve_dir,
    TEST_KERNEL,
};

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
        let (_, log) = apply_ignition(&ign, &root);
        assert_ignition_applied(&log);
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

    // The build's output folder on a web server: the agent and the CNI
    // plugins are fetched from it, each checked by sha512.
    let out = tmp.path().join("good");
    let good = serve_dir(out.clone());
    build("worker", &out, &["--agent-url", &good]);
    let ign = out.join("worker-1/worker-1.ign");
    assert!(std::fs::metadata(&ign).unwrap().len() < 16 * 1024, "remote-mode config should be small");
    assert_eq!(std::fs::read(out.join("worker-1/node-agent")).unwrap(), agent);
    let root = tmp.path().join("root-good");
    let (_, log) = apply_ignition(&ign, &root);
    assert_ignition_applied(&log);
    check_installed_node(&root, "worker-1", "worker");
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let installed = std::fs::read(root.join("opt/cni/bin").join(plugin)).unwrap();
        assert_eq!(installed, std::fs::read(out.join(format!("worker-1/cni-{plugin}"))).unwrap(), "{plugin}");
        assert_eq!(mode(&root.join("opt/cni/bin").join(plugin)), 0o755);
    }

    // A server handing out other bytes must be refused by the sha512 check:
    // for the agent, and for a plugin.
    for tamper in ["node-agent", "cni-portmap"] {
        let out = tmp.path().join(format!("evil-{tamper}"));
        let evil = serve_dir(out.clone());
        build("worker", &out, &["--agent-url", &evil]);
        let file = out.join("worker-1").join(tamper);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let root: PathBuf = tmp.path().join(format!("root-evil-{tamper}"));
        let (ok, log) = apply_ignition(&out.join("worker-1/worker-1.ign"), &root);
        assert!(!ok, "tampered {tamper} was accepted:\n{log}");
        assert!(log.contains("hash verification failed") || log.contains("mismatch"), "{log}");
    }
    assert!(!tmp.path().join("root-evil-node-agent/opt/bin/node-agent").exists());
    assert!(!tmp.path().join("root-evil-cni-portmap/opt/cni/bin/portmap").exists());
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
    let (_, log) = apply_ignition(&stub, &root);
    assert_ignition_applied(&log);
    check_installed_node(&root, "worker-1", "worker");

    let mut tampered = full;
    let i = tampered.len() / 2;
    tampered[i] ^= 1;
    let evil = serve(tampered);
    let out = tmp.path().join("evil");
    build("worker", &out, &["--stub-url", &evil]);
    let root = tmp.path().join("root-evil");
    let (ok, log) = apply_ignition(&out.join("worker-1/worker-1.stub.ign"), &root);
    assert!(!ok && log.contains("hash verification failed"), "{log}");
    assert!(!root.join("opt/bin/node-agent").exists());
}

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxT1t2I1nLlYkJ3sCSEPtVXr3H4GcEgqJtyrqTmC8Uh admin@example";

/// A cluster file beside three fragments (every node's at spec 3.0.0, the
/// workers', worker-1's own) and an SSH key for `core`.
fn cluster_with_fragments(dir: &Path, extra_fragment: Option<&str>) -> PathBuf {
    let data = |t: &str| format!("data:,{t}");
    let file = |path: &str, text: &str| {
        format!(r#"{{"path":"{path}","mode":420,"overwrite":true,"contents":{{"source":"{}"}}}}"#, data(text))
    };
    let frag = |version: &str, files: &[String], more: &str| {
        format!(r#"{{"ignition":{{"version":"{version}"}},"storage":{{"files":[{}]}}{more}}}"#, files.join(","))
    };
    std::fs::create_dir_all(dir.join("ign")).unwrap();
    std::fs::write(
        dir.join("ign/all.ign"),
        frag("3.0.0", &[file("/etc/motd", "all"), file("/etc/all", "every%20node")], ""),
    )
    .unwrap();
    let unit = r#","systemd":{"units":[{"name":"hello.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}]}"#;
    std::fs::write(dir.join("ign/workers.ign"), frag("3.2.0", &[file("/etc/role", "worker")], unit)).unwrap();
    std::fs::write(dir.join("ign/worker-1.ign"), frag("3.3.0", &[file("/etc/motd", "worker-1")], "")).unwrap();
    if let Some(f) = extra_fragment {
        std::fs::write(dir.join("ign/extra.ign"), f).unwrap();
    }
    let text = imgbuild::cluster::DEFAULT_TOML
        .replace("[[node]]\nname = \"worker-1\"", "[[node]]\nname = \"worker-1\"\nmerge = [\"ign/worker-1.ign\"]")
        .replace(
            "[artifacts]",
            &format!(
                "[ignition]\nmerge = [\"ign/all.ign\"{}]\n\n[ignition.roles.worker]\nmerge = [\"ign/workers.ign\"]\n\n[access]\nssh_authorized_keys = [\"{SSH_KEY}\"]\n\n[artifacts]",
                if extra_fragment.is_some() { ", \"ign/extra.ign\"" } else { "" }
            ),
        );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn user_fragments_and_ssh_keys_are_merged_by_real_ignition() {
    require_tool("ignition-validate");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = cluster_with_fragments(tmp.path(), None);
    let out = tmp.path().join("out");
    run_ok(
        imgbuild_with_agent().args(["--all", "--only", "ignition", "--cluster"]).arg(&cluster).arg("--out").arg(&out),
    );
    let ign = out.join("worker-1/worker-1.ign");
    let v = Command::new("ignition-validate").arg(&ign).output().unwrap();
    assert!(v.status.success(), "{v:?}");
    let root = tmp.path().join("root");
    // Flatcar's root already has `core`: Ignition adds the key to it.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("home/core")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ncore:x:500:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:1::::::\ncore:*:1::::::\n").unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\ncore:!::\n").unwrap();
    std::os::unix::fs::chown(root.join("home/core"), Some(500), Some(500)).unwrap();
    let (_, log) = apply_ignition(&ign, &root);
    assert_ignition_applied(&log);
    check_installed_node(&root, "worker-1", "worker");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}\n{log}"));
    assert_eq!(read("etc/all"), "every node");
    assert_eq!(read("etc/role"), "worker");
    assert_eq!(read("etc/motd"), "worker-1", "the node's fragment is merged last and wins, as Ignition merges");
    assert!(read("etc/systemd/system/hello.service").contains("ExecStart=/bin/true"));
    // Where Flatcar's Ignition puts them (update-ssh-keys gathers the folder).
    let keys = read("home/core/.ssh/authorized_keys.d/ignition");
    assert!(keys.contains(SSH_KEY), "{keys}");
    // Other roles get every node's fragment only.
    let etcd_root = tmp.path().join("root-etcd");
    let (_, log) = apply_ignition(&out.join("etcd-1/etcd-1.ign"), &etcd_root);
    assert_ignition_applied(&log);
    assert!(etcd_root.join("etc/all").exists() && !etcd_root.join("etc/role").exists());
    // The image's own applier applies the files and names what it skips.
    let check = Command::new(agent_path()).args(["check", "--ignition"]).arg(&ign).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{said}");
    assert!(said.contains("passwd.users[core] is not applied in the image"), "{said}");
    assert!(said.contains("systemd.units[hello.service] is not applied in the image"), "{said}");
    // Fragments may hold secrets: NODE.ign is private even without etcd TLS.
    let plain = std::fs::read_to_string(&cluster).unwrap().replace("tls = true", "tls = false");
    std::fs::write(&cluster, plain).unwrap();
    let out = tmp.path().join("plain");
    run_ok(
        imgbuild_with_agent().args(["--all", "--only", "ignition", "--cluster"]).arg(&cluster).arg("--out").arg(&out),
    );
    assert_eq!(mode(&out.join("worker-1/worker-1.ign")), 0o600);
}

#[test]
fn fragments_that_clash_with_imgbuild_are_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,x"}}]}}"#,
            "storage.files[0].path: path /etc/hostname is also written by imgbuild for node etcd-1",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"node-agent.service","mask":true}]}}"#,
            "systemd.units[0]: unit node-agent.service is also written by imgbuild",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["x"]}]}}"#,
            "passwd.users[0]: user core is also written by imgbuild",
        ),
        (r#"{"ignition":{"version":"3.4.0"}}"#, "imgbuild merges Ignition specs 3.0.0 to 3.3.0"),
        (
            r#"{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"data:,%7B%7D"}]}}}"#,
            "ignition.config: a fragment may not merge or replace configs of its own",
        ),
        (r#"{"ignition":{"version":"3.3.0"},"Storage":{"Files":[{"Path":"/etc/hostname"}]}}"#, "unused key"),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc//hostname"}]}}"#,
            "storage.files[0].path: \"/etc//hostname\" is not a clean absolute path",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"links":[{"path":"/opt/bin","target":"/tmp"}]}}"#,
            "storage.links[0].path: path /opt/bin is also written by imgbuild",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/hostname/x"}]}}"#,
            "path /etc/hostname/x is also written",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/systemd/system/node-agent.service"}]}}"#,
            "path /etc/systemd/system/node-agent.service is also written",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"node-agent.service","dropins":[{"name":"x.conf","contents":"[Service]\nExecStart=\nExecStart=/bin/sh\n"}]}]}}"#,
            "dropin-on node-agent.service is also written",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"foo"}]}}"#,
            "systemd.units[0].name: \"foo\" is not a systemd unit name",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","mode":99999}]}}"#,
            "storage.files[0].mode: 99999 is not a mode",
        ),
        (r#"{"ignition":{"version":"2.2.0"}}"#, "not an Ignition config"),
    ];
    for (i, (fragment, want)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("c{i}"));
        let cluster = cluster_with_fragments(&dir, Some(fragment));
        let out = dir.join("out");
        let res = imgbuild_with_agent()
            .args(["--all", "--only", "ignition", "--cluster"])
            .arg(&cluster)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{fragment}: {err}");
        assert!(
            err.contains(&format!("{}: ", dir.join("ign/extra.ign").display())) && err.contains(want),
            "{fragment}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists(), "nothing written");
    }
    // The cluster file's own mistakes name the cluster file and the field.
    let dir = tmp.path().join("keys");
    let cluster = cluster_with_fragments(&dir, None);
    let text = std::fs::read_to_string(&cluster).unwrap();
    for (edit, want) in [
        (
            text.replace(SSH_KEY, &format!("{SSH_KEY}\\nssh-ed25519 AAAA evil")),
            "access.ssh_authorized_keys[0]: holds a line break",
        ),
        (text.replace("ign/all.ign", "ign/missing.ign"), "ignition.merge[0]: cannot read"),
        (text.replace("[ignition.roles.worker]", "[ignition.roles.workers]"), "ignition.roles.workers: unknown role"),
    ] {
        std::fs::write(&cluster, edit).unwrap();
        let res = imgbuild_with_agent()
            .args(["--all", "--only", "ignition", "--cluster"])
            .arg(&cluster)
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("{}: {want}", cluster.display())), "{err}");
    }
}
