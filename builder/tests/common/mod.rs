//! Helpers for the builder's integration tests: run the real binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `imgbuild`, keeping the cluster CA it creates by default (under
/// `$XDG_DATA_HOME`) inside `target/`, not in the user's home.
pub fn imgbuild() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    c.env("XDG_DATA_HOME", Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data-home"));
    c
}

/// The agent cargo built beside imgbuild (the workspace builds both).
pub fn agent_path() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_imgbuild")).with_file_name("node-agent");
    assert!(p.is_file(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails loudly when a tool the test needs is not installed: tests never skip.
pub fn require_tool(path: &str) {
    assert!(
        Path::new(path).exists() || which(path),
        "{path} is not installed; run `bash tests/install-deps.sh` (tests/run.sh does) to install the test dependencies"
    );
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// The download cache the image tests share, so the Debian kernel and
/// packages are fetched once per machine (`$IMGBUILD_CACHE`, else
/// `target/imgbuild-cache`).
pub fn test_cache() -> PathBuf {
    std::env::var_os("IMGBUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/imgbuild-cache"))
}

/// `imgbuild` with the real agent and the shared cache.
pub fn imgbuild_with_agent() -> Command {
    let mut c = imgbuild();
    c.env("IMGBUILD_AGENT", agent_path()).env("IMGBUILD_CACHE", test_cache());
    c
}

/// The reference cluster's file in `dir`, with `images` (lines of the
/// `[images]` table) added.
pub fn cluster_with_images(dir: &Path, images: &str) -> PathBuf {
    let text = imgbuild::cluster::DEFAULT_TOML.replace("[artifacts]", &format!("[images]\n{images}\n\n[artifacts]"));
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `text`, a cluster file without an `[images]` table, with containerd left
/// out of the images: for boot tests that do not exercise the runtime.
pub fn without_runtime(text: &str) -> String {
    assert!(!text.contains("[images]"), "{text}");
    format!("{text}\n[images]\ncontainerd = false\n")
}

/// The Debian cloud kernel the image tests boot, as a `--kernel` source.
pub const TEST_KERNEL: &str = "apt:linux-image-cloud-amd64";

/// Boots `dir`'s image in QEMU (TCG), with `extra` QEMU arguments, until
/// `until` appears on the console or `secs` pass; returns the console text.
pub fn boot_console_with(dir: &Path, extra: &[&str], until: &str, secs: u64) -> String {
    boot_console_until(dir, extra, "", |console| console.contains(until), secs)
}

/// As [`boot_console_with`], with `append` added to the kernel command line,
/// until `done` says the console shows what the test waits for.
pub fn boot_console_until(dir: &Path, extra: &[&str], append: &str, done: impl Fn(&str) -> bool, secs: u64) -> String {
    require_tool("qemu-system-x86_64");
    let cmdline = format!("{} {append}", std::fs::read_to_string(dir.join("cmdline")).unwrap().trim());
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-kernel"])
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.img"))
        .arg("-append")
        .arg(cmdline.trim())
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = output_chunks(child.stdout.take().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut console = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            console.extend(chunk);
            if done(&String::from_utf8_lossy(&console)) {
                // Give the guest a moment to show what happens after.
                std::thread::sleep(std::time::Duration::from_secs(2));
                while let Ok(c) = rx.try_recv() {
                    console.extend(c);
                }
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&console).into_owned()
}

/// Serves `body` on loopback for every request; returns the base URL.
pub fn serve(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut s = &stream;
            let _ = std::io::Write::write_fmt(
                &mut s,
                format_args!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
            );
            let _ = std::io::Write::write_all(&mut s, &body);
        }
    });
    format!("http://{addr}")
}

/// Serves the files under `dir` on loopback by request path (404 for
/// anything else), as a web server hosting a build's output would.
pub fn serve_dir(dir: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut request = String::new();
            let _ = std::io::BufRead::read_line(&mut reader, &mut request);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
            let file = (!path.split('/').any(|c| c == ".." || c.is_empty())).then(|| dir.join(&path));
            let mut s = &stream;
            let _ = match file.and_then(|f| std::fs::read(f).ok()) {
                Some(body) => std::io::Write::write_fmt(
                    &mut s,
                    format_args!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
                )
                .and_then(|()| std::io::Write::write_all(&mut s, &body)),
                None => std::io::Write::write_all(
                    &mut s,
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://{addr}")
}

/// A child's output as chunks on a channel, read on a thread of its own, so
/// tests can poll a VM console with timeouts.
pub fn output_chunks(mut out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// A real etcd 3.4 on loopback requiring client certificates from a CA made
/// for the test, with the etcd-1 member certificate imgbuild issues.
pub struct TlsEtcd {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_tls_etcd(dir: &Path, pki_dir: &Path) -> TlsEtcd {
    require_tool("etcd");
    let ca = imgbuild::pki::Pki::load_or_create(pki_dir, "imgbuild").unwrap();
    let cluster = imgbuild::cluster::Cluster::embedded_default();
    let member = ca.issue(cluster.node("etcd-1").unwrap(), true).member.unwrap();
    for (f, text) in [("ca.crt", ca.ca_cert()), ("etcd.crt", &member.cert), ("etcd.key", &member.key)] {
        std::fs::write(dir.join(f), text).unwrap();
    }
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let child = std::process::Command::new("etcd")
        .arg("--name=etcd-1")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=etcd-1=http://127.0.0.1:{peer}"))
        .arg(format!("--cert-file={}", dir.join("etcd.crt").display()))
        .arg(format!("--key-file={}", dir.join("etcd.key").display()))
        .arg(format!("--trusted-ca-file={}", dir.join("ca.crt").display()))
        .arg("--client-cert-auth")
        .arg("--enable-v2=false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let etcd = TlsEtcd { child, url };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(std::time::Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    etcd
}

pub const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// Runs Ignition's fetch and files stages for `config` into `root`.
/// Returns the files stage's log.
pub fn apply_ignition(config: &Path, root: &Path) -> (bool, String) {
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
pub fn assert_ignition_applied(log: &str) {
    let critical: Vec<&str> = log.lines().filter(|l| l.starts_with("CRITICAL")).collect();
    assert!(critical.iter().all(|l| l.contains("relabel")), "Ignition failed:\n{log}");
    assert!(log.contains("fetch: fetch passed"), "{log}");
    assert!(log.contains("files: op(") && !log.contains("[failed]   writing"), "{log}");
}
