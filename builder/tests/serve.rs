//! `imgbuild serve` over a real build: endpoints, MAC spellings, refusals.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{imgbuild, imgbuild_with_agent, run_ok, TEST_KERNEL};

struct Serving(Child, String);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(out: &std::path::Path) -> Serving {
    serve_with(out, &[])
}

fn serve_with(out: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Serving {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = imgbuild()
        .args(["serve", "--listen", &listen, "--out"])
        .arg(out)
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serving = Serving(child, format!("http://{listen}"));
    for _ in 0..100 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            return serving;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("serve did not listen on {listen}");
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::blocking::get(url).unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

#[test]
fn serves_nodes_by_mac_and_refuses_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(imgbuild_with_agent().args(["--role", "worker", "--kernel", TEST_KERNEL, "--out"]).arg(&out));
    let s = serve(&out);
    let base = &s.1;

    let (code, body) = get(&format!("{base}/boot.ipxe"));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(code, 200);
    assert!(text.starts_with("#!ipxe\n") && text.contains(&format!("set base {base}\n")), "{text}");
    assert!(text.contains("chain --autofree ${base}/ipxe?mac=${net0/mac}"), "{text}");

    let w1 = std::fs::read(out.join("worker-1/worker-1.ipxe")).unwrap();
    for mac in ["52:54:00:13:02:9f", "52-54-00-13-02-9F", "52:54:00:13:02:9F", "52%3A54%3A00%3A13%3A02%3A9f"] {
        assert_eq!(get(&format!("{base}/ipxe?mac={mac}")), (200, w1.clone()), "{mac}");
    }
    let ign = std::fs::read(out.join("worker-2/worker-2.ign")).unwrap();
    assert_eq!(get(&format!("{base}/ignition?mac=52:54:00:1c:e9:fa")), (200, ign), "configs are served byte-identical");
    let vmlinuz = std::fs::read(out.join("worker-1/vmlinuz")).unwrap();
    assert_eq!(get(&format!("{base}/assets/worker-1/vmlinuz")), (200, vmlinuz));

    for bad in [
        "/ignition?mac=52:54:00:44:53:ef", // a node that was not built here
        "/ignition?mac=nonsense",
        "/ignition",
        "/ipxe?mac=52:54:00:00:00:00",
        "/assets/worker-1/nope",
        "/assets/nope/vmlinuz",
        "/etc/passwd",
    ] {
        assert_eq!(get(&format!("{base}{bad}")).0, 404, "{bad}");
    }
    // Raw paths a client did not normalize never leave the output dir.
    for raw in [
        "/assets/worker-1/../worker-2/worker-2.ign",
        "/assets/worker-1/%2e%2e/worker-2/worker-2.ign",
        "/assets/../../etc/passwd",
        "/assets/worker-1/../../x",
    ] {
        assert!(raw_get(base, raw).starts_with("HTTP/1.1 404"), "{raw}");
    }
}

fn raw_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// The token in a node's iPXE script.
fn token_in(script: &str) -> String {
    script.split("token=").nth(1).unwrap()[..32].to_owned()
}

#[test]
fn with_a_token_secret_a_mac_alone_gets_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = tmp.path().join("out");
    run_ok(
        imgbuild_with_agent()
            .args([
                "--role",
                "worker",
                "--kernel",
                TEST_KERNEL,
                "--stub-url",
                "http://192.0.2.1:8080",
                "--token-secret",
            ])
            .arg(&secret)
            .arg("--out")
            .arg(&out),
    );
    let script = std::fs::read_to_string(out.join("worker-1/worker-1.ipxe")).unwrap();
    let (t1, t2) = (token_in(&script), token_in(&std::fs::read_to_string(out.join("worker-2/worker-2.ipxe")).unwrap()));
    assert_ne!(t1, t2);
    assert!(script.contains(&format!("vmlinuz?token={t1} ")) && script.contains(&format!("initrd.img?token={t1} ")));
    assert!(script.contains(&format!("ignition?mac=${{net0/mac}}&token={t1} ")), "{script}");
    let stub = std::fs::read_to_string(out.join("worker-1/worker-1.stub.ign")).unwrap();
    assert!(stub.contains(&format!("&token={t1}")), "{stub}");

    let s = serve_with(&out, &["--token-secret".as_ref(), secret.as_os_str()]);
    let base = &s.1;
    let ign = std::fs::read(out.join("worker-1/worker-1.ign")).unwrap();
    let w1 = "52:54:00:13:02:9f";
    assert_eq!(get(&format!("{base}/ignition?mac={w1}&token={t1}")), (200, ign));
    for refused in [
        format!("/ignition?mac={w1}"),
        format!("/ignition?mac={w1}&token={t2}"), // another node's token
        format!("/ignition?mac={w1}&token={}", &t1[..31]),
        format!("/ipxe?mac={w1}"),
        "/assets/worker-1/initrd.img".to_owned(),
        format!("/assets/worker-1/initrd.img?token={t2}"),
    ] {
        assert_eq!(get(&format!("{base}{refused}")).0, 403, "{refused}");
    }
    assert_eq!(get(&format!("{base}/assets/worker-1/initrd.img?token={t1}")).0, 200);
    assert_eq!(get(&format!("{base}/ipxe?mac={w1}&token={t1}")), (200, script.into_bytes()));
    assert_eq!(get(&format!("{base}/ignition?mac=52:54:00:44:53:ef&token={t1}")).0, 404);

    // A secret others can read is refused, naming the file: exit 2, nothing written.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = imgbuild_with_agent()
        .args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--token-secret"])
        .arg(&secret)
        .arg("--out")
        .arg(tmp.path().join("o2"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&secret.display().to_string()) && err.contains("chmod 600"), "{err}");
    assert!(!tmp.path().join("o2").exists());
}
