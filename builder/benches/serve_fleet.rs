//! `imgbuild serve` under a fleet booting at once: N clients, each from a
//! loopback address of its own (as machines have their own; serve bounds
//! connections per client address), fetch their node's iPXE script,
//! Ignition config and initramfs, all starting together; against Debian's
//! nginx serving the same files from the same directory in the same run.
//! After a warm-up round each, rounds alternate between the two; the
//! median round is reported.
//!
//!   cargo bench -p imgbuild --bench serve_fleet -- --out BUILD_DIR [--clients 200] [--rounds 3]
//!
//! BUILD_DIR is an `imgbuild --all` output. Prints table rows: total time,
//! p99 per client, peak memory (VmHWM) of each server; errors fail the run.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

struct Node {
    name: String,
    mac: String,
}

/// What one client fetches: (our URL path, nginx's URL path, expected length).
type Fetches = Vec<(String, String, u64)>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let Some(out) = arg("--out").map(PathBuf::from) else {
        println!("serve_fleet: no --out BUILD_DIR given; nothing to measure");
        return Ok(());
    };
    let clients: usize = arg("--clients").map(|c| c.parse()).transpose()?.unwrap_or(200);
    let rounds: usize = arg("--rounds").map(|c| c.parse()).transpose()?.unwrap_or(3);
    let nodes = nodes(&out)?;
    let fetches: Vec<Fetches> = nodes.iter().map(|n| fetches(&out, n)).collect::<Result<_>>()?;

    let ours_port = free_port()?;
    let mut ours = Server(
        Command::new(env!("CARGO_BIN_EXE_imgbuild"))
            .args(["serve", "--insecure-no-token", "--listen", &format!("127.0.0.1:{ours_port}"), "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting imgbuild serve")?,
    );
    let nginx_port = free_port()?;
    let nginx_dir = tempfile::tempdir()?;
    let mut nginx = start_nginx(nginx_dir.path(), &out, nginx_port)?;
    wait_listening(ours_port)?;
    wait_listening(nginx_port)?;

    // One unmeasured round each first: both then start from the same page cache.
    fleet(ours_port, clients, &fetches, true)?;
    fleet(nginx_port, clients, &fetches, false)?;
    let (mut ours_runs, mut nginx_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours_runs.push(fleet(ours_port, clients, &fetches, true)?);
        nginx_runs.push(fleet(nginx_port, clients, &fetches, false)?);
    }
    let (o, n) = (median_round(&mut ours_runs), median_round(&mut nginx_runs));
    let ours_mem = hwm_kib(ours.0.id())?;
    let nginx_mem: u64 = nginx_pids(nginx.0.id()).iter().map(|p| hwm_kib(*p).unwrap_or(0)).sum();
    let bytes: u64 = (0..clients).map(|i| fetches[i % fetches.len()].iter().map(|f| f.2).sum::<u64>()).sum();
    let what = format!(
        "`imgbuild serve`, {clients} clients at once, each iPXE script + Ignition config + initramfs ({:.1} GB in all), median of {rounds} rounds",
        bytes as f64 / 1e9
    );
    println!(
        "| {what} | {:.3} s | {:.3} s (nginx, sendfile, 2 workers) | {:.2} | ≤ 1.5 |",
        o.total.as_secs_f64(),
        n.total.as_secs_f64(),
        o.total.as_secs_f64() / n.total.as_secs_f64()
    );
    println!(
        "| … p99 per client (its three files) | {:.3} s | {:.3} s | {:.2} | 0 errors |",
        o.p99.as_secs_f64(),
        n.p99.as_secs_f64(),
        o.p99.as_secs_f64() / n.p99.as_secs_f64()
    );
    println!(
        "| … peak memory (VmHWM), server processes | {:.1} MiB | {:.1} MiB (master + workers) | | bounded: ≤ 512 connections, each a thread (256 KiB stack) with an 8 KiB head buffer; bodies go by sendfile |",
        ours_mem as f64 / 1024.0,
        nginx_mem as f64 / 1024.0
    );
    ours.stop();
    nginx.stop();
    Ok(())
}

struct Round {
    total: Duration,
    p99: Duration,
}

fn median_round(runs: &mut [Round]) -> Round {
    runs.sort_by_key(|r| r.total);
    let m = &runs[runs.len() / 2];
    Round { total: m.total, p99: m.p99 }
}

/// Every node of the build, from its manifest.
fn nodes(out: &Path) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path().join("manifest.json");
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let m: serde_json::Value = serde_json::from_slice(&bytes)?;
        let (Some(name), Some(mac)) = (m["node"].as_str(), m["mac"].as_str()) else { continue };
        nodes.push(Node { name: name.to_owned(), mac: mac.to_owned() });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    ensure!(!nodes.is_empty(), "no node in {}", out.display());
    Ok(nodes)
}

fn fetches(out: &Path, n: &Node) -> Result<Fetches> {
    let len = |f: &str| -> Result<u64> {
        Ok(std::fs::metadata(out.join(&n.name).join(f)).with_context(|| format!("{}/{f}", n.name))?.len())
    };
    let (ipxe, ign) = (format!("{}.ipxe", n.name), format!("{}.ign", n.name));
    Ok(vec![
        (format!("/ipxe?mac={}", n.mac), format!("/{}/{ipxe}", n.name), len(&ipxe)?),
        (format!("/ignition?mac={}", n.mac), format!("/{}/{ign}", n.name), len(&ign)?),
        (format!("/assets/{}/initrd.img", n.name), format!("/{}/initrd.img", n.name), len("initrd.img")?),
    ])
}

/// One fleet: every client starts at once; each client's time is its three
/// fetches; any error or short body fails the run.
fn fleet(port: u16, clients: usize, fetches: &[Fetches], ours: bool) -> Result<Round> {
    let gate = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let gate = gate.clone();
            let todo = fetches[i % fetches.len()].clone();
            // 127.1.0.1, 127.1.0.2, ...: a source address per client.
            let source = IpAddr::V4(Ipv4Addr::from(0x7f01_0001 + i as u32));
            std::thread::spawn(move || -> Result<Duration> {
                let client = reqwest::blocking::Client::builder()
                    .local_address(source)
                    .timeout(Duration::from_secs(300))
                    .build()?;
                gate.wait();
                let start = Instant::now();
                for (our_path, nginx_path, want) in &todo {
                    let url = format!("http://127.0.0.1:{port}{}", if ours { our_path } else { nginx_path });
                    let mut resp = client.get(&url).send().with_context(|| url.clone())?;
                    ensure!(resp.status() == 200, "{url}: {}", resp.status());
                    let got = std::io::copy(&mut resp, &mut std::io::sink())?;
                    ensure!(got == *want, "{url}: {got} bytes, want {want}");
                }
                Ok(start.elapsed())
            })
        })
        .collect();
    gate.wait();
    let start = Instant::now();
    let mut times = Vec::with_capacity(clients);
    for t in threads {
        times.push(t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
    }
    let total = start.elapsed();
    times.sort();
    let p99 = times[(times.len() * 99).div_ceil(100).saturating_sub(1)];
    Ok(Round { total, p99 })
}

fn start_nginx(dir: &Path, root: &Path, port: u16) -> Result<Server> {
    let conf = format!(
        "daemon off;\nuser root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n",
        d = dir.display(),
        r = root.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx (bench/install-deps.sh installs it)")?;
    Ok(Server(child))
}

struct Server(Child);

impl Server {
    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(port: u16) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

/// Peak resident memory of a process, KiB.
fn hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM")?.parse()?)
}

/// nginx's master and its workers.
fn nginx_pids(master: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    std::iter::once(master).chain(children.split_whitespace().filter_map(|p| p.parse().ok())).collect()
}
