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
    // The reference cluster has etcd TLS: configs hold keys. A lab serves them openly.
    let s = serve_with(&out, &["--insecure-no-token".as_ref()]);
    let base = &s.1;

    let (code, body) = get(&format!("{base}/boot.ipxe"));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(code, 200);
    assert!(text.starts_with("#!ipxe\n") && text.contains(&format!("set base {base}\n")), "{text}");
    assert!(text.contains("chain --autofree ${base}/ipxe?uuid=${uuid}&mac=${net0/mac}"), "{text}");

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
    let (head, body) = raw(base, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    head + &String::from_utf8_lossy(&body)
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
    // What carries a token is as private as what carries a key.
    let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
    for f in ["worker-1/worker-1.ipxe", "worker-1/worker-1.stub.ign", "worker-1/worker-1.ign", "worker-1/initrd.img"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    assert_eq!(mode("worker-1/vmlinuz"), 0o644);

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

/// A hand-made output folder: node `n1` (MAC 52:54:00:00:00:01) with a 64 MiB
/// `vmlinuz`, enough to fill any socket buffer.
fn fake_out(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("n1")).unwrap();
    std::fs::write(out.join("n1/vmlinuz"), vec![7u8; 64 << 20]).unwrap();
    std::fs::write(out.join("n1/n1.ign"), "{}").unwrap();
    let manifest = r#"{"node":"n1","role":"worker","mac":"52:54:00:00:00:01","artifacts":[{"file":"vmlinuz","size":67108864,"sha256":"x"}]}"#;
    std::fs::write(out.join("n1/manifest.json"), manifest).unwrap();
    out
}

fn addr(s: &Serving) -> String {
    s.1.trim_start_matches("http://").to_owned()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn clients_that_never_read_do_not_stop_others() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(&fake_out(tmp.path()));
    // Eight connections ask for the kernel and never read a byte.
    let stuck: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(addr(&s)).unwrap();
            write!(c, "GET /assets/n1/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..10 {
        let r = client.get(format!("{}/ipxe?mac=52:54:00:00:00:09", s.1)).send().unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
    drop(stuck);
}

#[test]
fn pipelined_requests_keep_memory_bounded() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(&fake_out(tmp.path()));
    let pid = s.0.id();
    let before = vm_rss_kib(pid);
    let mut c = std::net::TcpStream::connect(addr(&s)).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = b"GET /ipxe?mac=52:54:00:00:00:09 HTTP/1.1\r\nHost: x\r\n\r\n";
    // Up to 10 MB of requests, without reading an answer: the server stops
    // reading when its answers back up, it does not queue them.
    let mut sent = 0usize;
    while sent < 10 << 20 {
        match c.write(&req.repeat(1000)) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let during = vm_rss_kib(pid);
    assert!(during < before + (16 << 10), "RSS grew from {before} KiB to {during} KiB after {sent} bytes");
    drop(c);
    // Pipelined requests are answered in order, 100 on one connection, the
    // last with `Connection: close`.
    let mut c = std::net::TcpStream::connect(addr(&s)).unwrap();
    c.write_all(&req.repeat(100)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = Vec::new();
    c.read_to_end(&mut answers).unwrap();
    let text = String::from_utf8_lossy(&answers);
    assert_eq!(text.matches("HTTP/1.1 404").count(), 100);
    assert_eq!(text.matches("Connection: close").count(), 1, "{text}");
    assert_eq!(get(&format!("{}/assets/n1/n1.ign", s.1)).0, 404, "still serving, and not unlisted files");
}

#[test]
fn oversized_and_malformed_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(&fake_out(tmp.path()));
    let long = format!("/ipxe?mac={}", "a".repeat(10_000));
    assert!(raw_get(&s.1, &long).starts_with("HTTP/1.1 414 "));
    let raw = |text: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr(&s)).unwrap();
        c.write_all(text.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    let big_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "b".repeat(9000));
    assert!(raw(&big_header).starts_with("HTTP/1.1 431 "));
    assert!(raw("GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(raw("GET /boot.ipxe HTTP/1.1\r\nHost: x\nchain http://evil/\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let script = raw("GET /boot.ipxe HTTP/1.1\r\nHost: evil\";chain http://x\r\nConnection: close\r\n\r\n");
    assert!(script.starts_with("HTTP/1.1 400 ") && !script.contains("chain"), "{script}");
    assert!(raw("POST /boot.ipxe HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").starts_with("HTTP/1.1 400 "));
    assert!(raw("GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nHost: evil\r\n\r\n").starts_with("HTTP/1.1 400 "));
}

#[test]
fn links_and_manifest_entries_out_of_the_folder_are_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fake_out(tmp.path());
    std::fs::write(tmp.path().join("secret"), "outside").unwrap();
    // A node folder that is a link, and a manifest that names a path out.
    std::os::unix::fs::symlink(out.join("n1"), out.join("n2")).unwrap();
    std::fs::create_dir(out.join("n3")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), out.join("n3/vmlinuz")).unwrap();
    let m3 = r#"{"node":"n3","role":"worker","mac":"52:54:00:00:00:03","artifacts":[{"file":"vmlinuz","size":1,"sha256":"x"}]}"#;
    std::fs::write(out.join("n3/manifest.json"), m3).unwrap();
    std::fs::create_dir(out.join("n4")).unwrap();
    let m4 = r#"{"node":"n4","role":"worker","mac":"52:54:00:00:00:04","artifacts":[{"file":"../../secret","size":1,"sha256":"x"}]}"#;
    std::fs::write(out.join("n4/manifest.json"), m4).unwrap();
    // FIFOs where a manifest or an artifact would be: they must not hang the server.
    std::fs::create_dir(out.join("n5")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(out.join("n5/manifest.json")).status().unwrap().success());
    std::fs::create_dir(out.join("n6")).unwrap();
    let m6 = r#"{"node":"n6","role":"worker","mac":"52:54:00:00:00:06","artifacts":[{"file":"vmlinuz","size":1,"sha256":"x"}]}"#;
    std::fs::write(out.join("n6/manifest.json"), m6).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(out.join("n6/vmlinuz")).status().unwrap().success());
    let s = serve(&out);
    assert_eq!(get(&format!("{}/assets/n1/vmlinuz", s.1)).0, 200);
    for path in [
        "/assets/n2/vmlinuz",
        "/assets/n3/vmlinuz",
        "/assets/n4/../../secret",
        "/assets/n4/..%2F..%2Fsecret",
        "/assets/n6/vmlinuz",
    ] {
        assert_eq!(raw_get(&s.1, path).split(' ').nth(1), Some("404"), "{path}");
    }
}

#[test]
fn private_files_need_a_token_unless_the_lab_says_otherwise() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = fake_out(tmp.path());
    // As a TLS build writes it: the config holds the node's key, 0600.
    std::fs::write(out.join("n1/n1.ign"), "{\"key\":\"PRIVATE KEY\"}").unwrap();
    std::fs::set_permissions(out.join("n1/n1.ign"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = serve(&out);
    let (code, body) = get(&format!("{}/ignition?mac=52:54:00:00:00:01", s.1));
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("--token-secret"));
    assert_eq!(get(&format!("{}/assets/n1/vmlinuz", s.1)).0, 200, "public files stay open");
    drop(s);
    let s = serve_with(&out, &["--insecure-no-token".as_ref()]);
    assert_eq!(get(&format!("{}/ignition?mac=52:54:00:00:00:01", s.1)), (200, b"{\"key\":\"PRIVATE KEY\"}".to_vec()));
}

#[test]
fn a_client_holding_idle_connections_loses_them_to_its_own_new_requests() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(&fake_out(tmp.path()));
    // Sixteen connections that send nothing: this client's whole share.
    let idle: Vec<std::net::TcpStream> = (0..16).map(|_| std::net::TcpStream::connect(addr(&s)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Its next request still gets an answer: an idle connection makes room.
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(addr(&s)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    drop(idle);
}

fn raw(base: &str, request: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8(all[..split].to_vec()).unwrap(), all[split..].to_vec())
}

/// What PXE firmware and boot loaders rely on: a Content-Length (never
/// chunked), HEAD, one byte range (206, 416 past the end, the whole file
/// for forms not served), and machines found by SMBIOS UUID before MAC.
#[test]
fn lengths_head_ranges_and_machines_by_uuid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (node, mac, uuid) in
        [("n1", "52:54:00:00:00:01", Some("4C4C4544-0042-3510-8052-B2C04F4E4B31")), ("n2", "52:54:00:00:00:02", None)]
    {
        std::fs::create_dir_all(out.join(node)).unwrap();
        std::fs::write(out.join(node).join("vmlinuz"), &file).unwrap();
        std::fs::write(out.join(node).join(format!("{node}.ipxe")), format!("#!ipxe\necho {node}\n")).unwrap();
        let uuid = uuid.map(|u| format!(r#""uuid":"{u}","#)).unwrap_or_default();
        let manifest = format!(
            r#"{{"node":"{node}","role":"worker","mac":"{mac}",{uuid}"artifacts":[{{"file":"vmlinuz","size":100000,"sha256":"x"}}]}}"#
        );
        std::fs::write(out.join(node).join("manifest.json"), manifest).unwrap();
    }
    let s = serve(&out);
    let base = &s.1;
    let req = |path: &str, extra: &str| {
        raw(base, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"))
    };

    let (head, body) = req("/assets/n1/vmlinuz", "");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 100000\r\n"), "{head}");
    assert!(head.contains("Accept-Ranges: bytes\r\n") && !head.to_lowercase().contains("chunked"), "{head}");
    assert_eq!(body, file);
    let (head, body) = raw(base, "HEAD /assets/n1/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 100000\r\n"), "{head}");
    assert!(body.is_empty());

    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=99000-", 99_000, 99_999),
        ("bytes=-10", 99_990, 99_999),
        ("bytes=5-5000000", 5, 99_999),
    ] {
        let (head, body) = req("/assets/n1/vmlinuz", &format!("Range: {range}\r\n"));
        assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{range}: {head}");
        assert!(head.contains(&format!("Content-Range: bytes {start}-{end}/100000\r\n")), "{range}: {head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", end - start + 1)), "{range}: {head}");
        assert_eq!(body, file[start..=end], "{range}");
    }
    for range in ["bytes=100000-", "bytes=-0"] {
        let (head, _) = req("/assets/n1/vmlinuz", &format!("Range: {range}\r\n"));
        assert!(
            head.starts_with("HTTP/1.1 416 ") && head.contains("Content-Range: bytes */100000\r\n"),
            "{range}: {head}"
        );
    }
    // Several ranges, other units, nonsense, or If-Range: the whole file.
    for extra in [
        "Range: bytes=0-1,5-6\r\n",
        "Range: items=0-1\r\n",
        "Range: bytes=9-2\r\n",
        "Range: bytes=0-1\r\nIf-Range: \"x\"\r\n",
    ] {
        let (head, body) = req("/assets/n1/vmlinuz", extra);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && body.len() == 100_000, "{extra}: {head}");
    }
    // A hard link is a second name for a file that may live anywhere: not served.
    assert_eq!(get(&format!("{base}/assets/n2/vmlinuz")).0, 200);
    std::fs::hard_link(out.join("n2/vmlinuz"), tmp.path().join("elsewhere")).unwrap();
    assert_eq!(get(&format!("{base}/assets/n2/vmlinuz")).0, 404);
    // A range never reaches what the path itself may not.
    assert!(req("/assets/n1/manifest.json/x", "Range: bytes=0-1\r\n").0.starts_with("HTTP/1.1 404"));

    // By UUID first (any case), then by MAC; an unknown or malformed UUID falls back to the MAC.
    let by = |q: &str| get(&format!("{base}/ipxe?{q}"));
    let n1 = (200, b"#!ipxe\necho n1\n".to_vec());
    let n2 = (200, b"#!ipxe\necho n2\n".to_vec());
    assert_eq!(by("uuid=4c4c4544-0042-3510-8052-b2c04f4e4b31"), n1);
    assert_eq!(by("uuid=4C4C4544-0042-3510-8052-B2C04F4E4B31&mac=52:54:00:00:00:02"), n1);
    assert_eq!(by("uuid=00000000-0000-0000-0000-000000000000&mac=52:54:00:00:00:02"), n2);
    assert_eq!(by("uuid=&mac=52:54:00:00:00:02"), n2);
    assert_eq!(by("uuid=not-a-uuid&mac=52-54-00-00-00-01"), n1);
    assert_eq!(by("uuid=11111111-2222-3333-4444-555555555555").0, 404);
}
