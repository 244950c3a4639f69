//! `imgbuild etcd status|add|remove|snapshot|restore` against a real etcd
//! 3.4 that requires client certificates from the cluster CA.

mod common;

use std::path::Path;

use common::{imgbuild, run_ok, start_tls_etcd, TlsEtcd};

fn etcd_cmd(etcd: &TlsEtcd, pki: &Path, args: &[&str]) -> std::process::Output {
    let mut c = imgbuild();
    c.arg("etcd").args(args).arg("--pki").arg(pki).arg("--endpoints").arg(&etcd.url);
    c.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// etcd answers once it has elected itself.
fn wait_ready(etcd: &TlsEtcd, pki: &Path) -> std::process::Output {
    for _ in 0..100 {
        let o = etcd_cmd(etcd, pki, &["status"]);
        if o.status.success() {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("etcd did not answer: {}", text(&etcd_cmd(etcd, pki, &["status"])));
}

/// `etcd access` on a running etcd without users: every node of the
/// cluster file gets its user and authentication goes on. Then the admin's
/// commands still work, and a worker's certificate writes its lease but
/// not the network config.
#[test]
fn access_makes_users_and_turns_authentication_on() {
    common::require_tool("etcdctl");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let etcd = start_tls_etcd(tmp.path(), &pki);
    wait_ready(&etcd, &pki);
    let o = etcd_cmd(&etcd, &pki, &["access"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "etcd authentication on: 2 administrators (etcd-1, imgbuild:admin), 3 nodes (master-1, worker-1, worker-2)\n"
    );
    // Debian's etcd 3.4.23 predates the fixes for etcd's known ways past its roles.
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: etcd 3.4.23 has known ways past its authorization"));
    // Again: every step may be repeated.
    let o = etcd_cmd(&etcd, &pki, &["access"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(etcd_cmd(&etcd, &pki, &["status"]).status.success(), "the admin certificate is root");

    let cluster = imgbuild::cluster::Cluster::embedded_default();
    let ca = imgbuild::pki::Pki::load(&pki).unwrap();
    let worker = cluster.node("worker-1").unwrap();
    let certs = ca.issue(worker, false);
    for (name, text) in [("ca.crt", ca.trust()), ("w.crt", &certs.client.cert), ("w.key", &certs.client.key)] {
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    let worker_ctl = |args: &[&str]| {
        let d = tmp.path().display();
        let o = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.url))
            .arg(format!("--cacert={d}/ca.crt"))
            .arg(format!("--cert={d}/w.crt"))
            .arg(format!("--key={d}/w.key"))
            .args(args)
            .output()
            .unwrap();
        (o.status.success(), text(&o))
    };
    let (ok, out) = worker_ctl(&["put", "/coreos.com/network/subnets/10.1.9.0-24", "{}"]);
    assert!(ok, "{out}");
    let (ok, out) = worker_ctl(&["put", "/coreos.com/network/config", "{}"]);
    assert!(!ok && out.contains("permission denied"), "{out}");

    // A cluster without client certificates has no names for users.
    let plain = tmp.path().join("plain.toml");
    std::fs::write(&plain, imgbuild::cluster::DEFAULT_TOML.replace("tls = true", "tls = false")).unwrap();
    let o = imgbuild()
        .args(["etcd", "access", "--cluster"])
        .arg(&plain)
        .arg("--endpoints")
        .arg(&etcd.url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("plain.toml") && text(&o).contains("etcd.tls"), "{}", text(&o));
}

#[test]
fn status_membership_snapshot_and_restore() {
    common::require_tool("etcdctl");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let etcd = start_tls_etcd(tmp.path(), &pki);
    let status = String::from_utf8(wait_ready(&etcd, &pki).stdout).unwrap();
    assert!(status.contains("etcd-1") && status.contains("3.4."), "{status}");
    // Membership: only etcd nodes of the cluster file, never a duplicate or the last member.
    let o = etcd_cmd(&etcd, &pki, &["add", "worker-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("worker-1: is not an etcd node of the cluster file"));
    let o = etcd_cmd(&etcd, &pki, &["add", "etcd-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("etcd-1 is already a member"), "{}", text(&o));
    let o = etcd_cmd(&etcd, &pki, &["remove", "etcd-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is the only member"), "{}", text(&o));
    // Some data, then a snapshot of it.
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/cluster/policies");
    let mut c = imgbuild();
    c.args(["policy", "apply", "-f"]).arg(&policies).arg("--pki").arg(&pki).arg("--endpoints").arg(&etcd.url);
    run_ok(&mut c);
    let snap = tmp.path().join("etcd.snapshot");
    let o = etcd_cmd(&etcd, &pki, &["snapshot", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777, 0o600, "a snapshot holds every key");
    // Restored into a new data folder, a new etcd serves the same policies.
    let data = tmp.path().join("restored");
    let o = etcd_cmd(
        &etcd,
        &pki,
        &["restore", snap.to_str().unwrap(), "--node", "etcd-1", "--data-dir", data.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let again = etcd_cmd(
        &etcd,
        &pki,
        &["restore", snap.to_str().unwrap(), "--node", "etcd-1", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(2), "an existing data folder is never overwritten");
    let (client, peer) = (common::free_port(), common::free_port());
    let mut restored = std::process::Command::new("etcd")
        .arg("--name=etcd-1")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg("--enable-v2=false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let plain = imgbuild::etcd::Etcd::new(vec![format!("http://127.0.0.1:{client}")], None).unwrap();
    let mut keys = Vec::new();
    for _ in 0..100 {
        if let Ok(k) = plain.range("/imgbuild/policy/v1/networkpolicies/") {
            keys = k;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = restored.kill();
    let _ = restored.wait();
    assert_eq!(keys.len(), 8, "every policy is in the restored database");
}
