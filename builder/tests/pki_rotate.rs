//! `imgbuild pki rotate`, against a real etcd that requires client
//! certificates: new node keys from the same CA, then a CA rotation in its
//! three steps with nodes rebuilt one at a time in between. At every moment
//! a node that has been rebuilt for the current or the previous step keeps
//! reading and writing, and the data written before the rotation is still
//! there after it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, imgbuild, require_tool};
use imgbuild::cluster::Cluster;
use imgbuild::pki::Pki;

/// What one node was built with: its client certificate and what it trusts.
#[derive(Clone)]
struct Build {
    dir: PathBuf,
}

/// Writes a node's files from the CA as it now is.
fn build(pki_dir: &Path, out: &Path, node: &str, tag: &str) -> Build {
    let pki = Pki::load(pki_dir).unwrap();
    let cluster = Cluster::embedded_default();
    let certs = pki.issue(cluster.node(node).unwrap(), node == "etcd-1");
    let dir = out.join(format!("{node}-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), &certs.ca).unwrap();
    std::fs::write(dir.join("client.crt"), &certs.client.cert).unwrap();
    std::fs::write(dir.join("client.key"), &certs.client.key).unwrap();
    if let Some(m) = certs.member {
        std::fs::write(dir.join("member.crt"), &m.cert).unwrap();
        std::fs::write(dir.join("member.key"), &m.key).unwrap();
    }
    Build { dir }
}

struct Etcd(std::process::Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd with the member's files from `b`, on the same data dir every time.
fn etcd(b: &Build, data: &Path, client: u16, peer: u16) -> Etcd {
    let url = format!("https://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .arg("--name=etcd-1")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=etcd-1=http://127.0.0.1:{peer}"))
        .arg(format!("--cert-file={}", b.dir.join("member.crt").display()))
        .arg(format!("--key-file={}", b.dir.join("member.key").display()))
        .arg(format!("--trusted-ca-file={}", b.dir.join("ca.crt").display()))
        .arg("--client-cert-auth")
        .arg("--enable-v2=false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(std::time::Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Etcd(child)
}

/// `etcdctl ARGS` as the node built into `b`: Ok(stdout) or Err(stderr).
fn ctl(b: &Build, client: u16, args: &[&str]) -> Result<String, String> {
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{client}"))
        .arg(format!("--cacert={}", b.dir.join("ca.crt").display()))
        .arg(format!("--cert={}", b.dir.join("client.crt").display()))
        .arg(format!("--key={}", b.dir.join("client.key").display()))
        .args(["--dial-timeout=3s", "--command-timeout=5s"])
        .args(args)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn rotate(pki: &Path, ca: bool) -> String {
    let mut c = imgbuild();
    c.args(["pki", "rotate", "--pki"]).arg(pki);
    if ca {
        c.arg("--ca");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn certs_in(pem_file: &Path) -> usize {
    std::fs::read_to_string(pem_file).unwrap().matches("BEGIN CERTIFICATE").count()
}

#[test]
fn node_keys_and_the_ca_rotate_while_the_cluster_keeps_working() {
    require_tool("etcd");
    require_tool("etcdctl");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    Pki::load_or_create(&pki, "imgbuild").unwrap();
    let (data, out) = (tmp.path().join("etcd-data"), tmp.path().join("builds"));
    let (client, peer) = (free_port(), free_port());
    let ok = |b: &Build, what: &str| {
        ctl(b, client, &["put", &format!("/rotation/{what}"), "ok"]).unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = ctl(b, client, &["get", "/before"]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(got.contains("kept"), "{what}: data from before the rotation: {got}");
    };

    // Before: one CA.
    let e0 = build(&pki, &out, "etcd-1", "0");
    let mut server = etcd(&e0, &data, client, peer);
    let (a0, b0) = (build(&pki, &out, "worker-1", "0"), build(&pki, &out, "worker-2", "0"));
    ctl(&a0, client, &["put", "/before", "kept"]).unwrap();

    // New node keys from the same CA: rebuilt nodes and old ones both work.
    let said = rotate(&pki, false);
    assert!(said.contains("generation 1"), "{said}");
    let a1 = build(&pki, &out, "worker-1", "1");
    assert_ne!(std::fs::read(a0.dir.join("client.key")).unwrap(), std::fs::read(a1.dir.join("client.key")).unwrap());
    ok(&a1, "new-node-key");
    ok(&b0, "old-node-key");

    // CA step 1: a next CA is staged; rebuilt nodes trust both, sign with the old.
    let said = rotate(&pki, true);
    assert!(said.starts_with("step 1 of 3"), "{said}");
    assert_eq!(std::fs::metadata(pki.join("ca-next.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let e1 = build(&pki, &out, "etcd-1", "s1");
    assert_eq!(certs_in(&e1.dir.join("ca.crt")), 2);
    drop(server);
    server = etcd(&e1, &data, client, peer);
    ok(&b0, "step 1, worker-2 not rebuilt yet");
    let a_s1 = build(&pki, &out, "worker-1", "s1");
    ok(&a_s1, "step 1, worker-1 rebuilt");
    let b_s1 = build(&pki, &out, "worker-2", "s1");
    ok(&b_s1, "step 1, worker-2 rebuilt");

    // Step 2: the new CA signs; the previous one is still trusted.
    let said = rotate(&pki, true);
    assert!(said.starts_with("step 2 of 3"), "{said}");
    let e2 = build(&pki, &out, "etcd-1", "s2");
    drop(server);
    server = etcd(&e2, &data, client, peer);
    // A node from step 1 trusts the new CA already and its certificate is
    // from the previous one, still trusted: the rolling rebuild never breaks it.
    ok(&b_s1, "step 2, worker-2 not rebuilt yet");
    // One built before step 1 trusts only the old CA: why every node is
    // rebuilt between steps.
    assert!(ctl(&b0, client, &["get", "/before"]).is_err(), "a node that skipped step 1 cannot verify the new CA");
    let a_s2 = build(&pki, &out, "worker-1", "s2");
    ok(&a_s2, "step 2, worker-1 rebuilt");
    let b_s2 = build(&pki, &out, "worker-2", "s2");
    ok(&b_s2, "step 2, worker-2 rebuilt");

    // Step 3: only the new CA is trusted.
    let said = rotate(&pki, true);
    assert!(said.starts_with("step 3 of 3"), "{said}");
    assert!(!pki.join("ca-previous.crt").exists() && !pki.join("ca-next.key").exists());
    let e3 = build(&pki, &out, "etcd-1", "s3");
    assert_eq!(certs_in(&e3.dir.join("ca.crt")), 1);
    drop(server);
    let _server = etcd(&e3, &data, client, peer);
    ok(&b_s2, "step 3, worker-2 not rebuilt yet");
    assert!(ctl(&b_s1, client, &["get", "/before"]).is_err(), "a certificate from the old CA is refused at the end");
    let a_s3 = build(&pki, &out, "worker-1", "s3");
    ok(&a_s3, "step 3, worker-1 rebuilt");
    // Node keys kept their generation through the CA's steps.
    assert_eq!(std::fs::read_to_string(pki.join("generation")).unwrap().trim(), "1");
}
