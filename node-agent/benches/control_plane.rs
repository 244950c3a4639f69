//! Control-plane benchmarks against a real etcd, each beside a baseline
//! measured in the same run (the machine is noisy: read the ratios).
//!
//!   cargo bench -p node-agent --bench control_plane [-- --quick] [--csv FILE] [--sizes 100,1000]
//!
//! Runs as root in a network namespace of its own (made at start), so every
//! link, route and etcd port it touches is private to it:
//! - lease storm: N simulated nodes acquire leases at once (lease logic only),
//!   among N/20 leases flanneld wrote beforehand (half of them on storm
//!   nodes' preferred subnets), vs N plain grant + create-if-absent;
//! - route programming: N peers' neighbour/FDB/route entries by the agent's
//!   backend vs `ip -batch` with the same entries;
//! - watch → route latency: the real agent process following N peers put one
//!   by one, seen through netlink route notifications, vs a plain etcd watcher;
//! - the ready agent's RSS and idle CPU.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use ipnet::Ipv4Net;
use node_agent::backend::Backend;
use node_agent::config::{Backend as BackendCfg, BackendType, NetworkConfig};
use node_agent::etcd::Client;
use node_agent::flannel::lease::{self, BackendData, Lease, LeaseAttrs, SUBNETS_PREFIX};
use node_agent::flannel::manager::SubnetManager;
use node_agent::flannel::Network;
use node_agent::netlink::Netlink;
use node_agent::types::MacAddr;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let csv = args.iter().position(|a| a == "--csv").and_then(|i| args.get(i + 1)).cloned();
    enter_private_netns()?;
    let etcd = Etcd::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let sizes: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect());
    let scale: &[usize] = match &sizes {
        Some(s) => s,
        None if quick => &[100],
        None => &[100, 500, 1000, 2000, 5000, 10000],
    };
    let peers = if quick { 100 } else { 1000 };

    println!("| benchmark | N | ours | baseline | ratio | check |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    let mut rows = Vec::new();
    for &n in scale {
        let storm = rt.block_on(lease_storm(&etcd.endpoint, n))?;
        let base = rt.block_on(plain_creates(&etcd.endpoint, n))?;
        row("lease storm (all leased)", n, storm.total, base, &storm.check);
        let prog = rt.block_on(program_routes(n))?;
        let ipb = ip_batch(n)?;
        row("programming peers' neigh+FDB+route", n, prog, ipb, &format!("{n} routes"));
        rows.push((n, storm.total, base, prog, ipb));
        etcd.clear()?;
    }
    let w = rt.block_on(watch_latency(&etcd.endpoint, etcd.pid(), peers, quick))?;
    println!(
        "| watch → route latency p50 / p99 | {peers} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} | {} routes seen |",
        ms(w.route.0),
        ms(w.route.1),
        ms(w.watch.0),
        ms(w.watch.1),
        w.route.0.as_secs_f64() / w.watch.0.as_secs_f64().max(1e-9),
        w.seen
    );
    println!(
        "| agent RSS, ready, {peers} peers | - | {:.1} MiB | etcd: {:.1} MiB | - | ≤ 10 MiB |",
        w.rss_mib, w.etcd_rss_mib
    );
    println!("| agent CPU while idle ({:.0} s) | - | {:.2} % | - | - | ≈ 0 |", w.idle_secs, w.idle_cpu_pct);
    if let Some(path) = csv {
        let mut f = std::fs::File::create(&path).with_context(|| format!("creating {path}"))?;
        writeln!(f, "n,lease_storm_s,plain_creates_s,program_s,ip_batch_s")?;
        for (n, a, b, c, d) in rows {
            writeln!(
                f,
                "{n},{:.4},{:.4},{:.4},{:.4}",
                a.as_secs_f64(),
                b.as_secs_f64(),
                c.as_secs_f64(),
                d.as_secs_f64()
            )?;
        }
    }
    Ok(())
}

fn row(what: &str, n: usize, ours: Duration, base: Duration, check: &str) {
    let ratio = ours.as_secs_f64() / base.as_secs_f64().max(1e-9);
    println!("| {what} | {n} | {:.3} s | {:.3} s | {ratio:.2} | {check} |", ours.as_secs_f64(), base.as_secs_f64());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A namespace of our own (still single-threaded here, as unshare requires).
fn enter_private_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET): run as root")?;
    sh("ip link set lo up")?;
    sh(&format!("ip link add eth0 type veth peer name eth0p && ip link set eth0p up && ip addr add {NODE_IP}/16 dev eth0 && ip link set eth0 up"))
}

fn sh(line: &str) -> Result<()> {
    let out = Command::new("sh").args(["-c", line]).output()?;
    ensure!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A real etcd on this namespace's loopback.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let (c, p) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("etcd")
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.path().display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            .args(["--enable-v2=false", "--quota-backend-bytes=4294967296"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (bash tests/install-deps.sh installs it)")?;
        let etcd = Etcd { child, endpoint, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.ctl(&["endpoint", "health"])? {
            ensure!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(etcd)
    }

    fn ctl(&self, args: &[&str]) -> Result<bool> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()?;
        Ok(out.status.success())
    }

    fn clear(&self) -> Result<()> {
        ensure!(self.ctl(&["del", "--prefix", "/"])?, "clearing etcd");
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A /8 pod network of /24 subnets: room for every simulated node.
fn network() -> Result<Network> {
    Network::from_config(&NetworkConfig {
        network: "10.0.0.0/8".parse()?,
        subnet_len: 24,
        subnet_min: None,
        subnet_max: None,
        backend: BackendCfg { kind: BackendType::Vxlan, vni: 1, port: 8472 },
        lease_ttl: None,
        enable_nftables: false,
    })
}

fn peer(i: usize) -> (Ipv4Addr, MacAddr) {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 1, 0)) + i as u32);
    let b = (i as u32).to_be_bytes();
    (ip, MacAddr([0x0a, 0x58, b[0], b[1], b[2], b[3]]))
}

fn attrs(i: usize) -> LeaseAttrs {
    let (ip, mac) = peer(i);
    LeaseAttrs { public_ip: ip, backend: BackendData::Vxlan { vni: 1, vtep_mac: mac } }
}

struct Storm {
    total: Duration,
    check: String,
}

/// Leases as flanneld writes them, from other public IPs (172.16/12): every
/// other one on a storm node's first preferred subnet, the rest anywhere.
async fn flanneld_leases(endpoint: &str, net: &Network, n: usize) -> Result<BTreeSet<Ipv4Net>> {
    let client = Client::new(&[endpoint.to_owned()], None)?;
    let mut taken = BTreeSet::new();
    for k in 0..n / 20 {
        let subnet = if k % 2 == 0 {
            node_agent::flannel::alloc::preferred(net, peer(k * 20).0).next().context("empty range")?
        } else {
            Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (((k as u32 * 7919) % 65536) << 8)), 24)?
        };
        let ip = Ipv4Addr::from(0xac10_0000 + k as u32);
        let value = format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"6e:24:cf:{:02x}:{:02x}:9a"}},"BackendV6Data":null}}"#,
            k >> 8 & 0xff,
            k & 0xff
        );
        if client.create(&lease::key(subnet), value.as_bytes(), None).await? {
            taken.insert(subnet);
        }
    }
    Ok(taken)
}

/// N nodes, each with its own client, acquiring at once.
async fn lease_storm(endpoint: &str, n: usize) -> Result<Storm> {
    let net = network()?;
    let theirs = flanneld_leases(endpoint, &net, n).await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = Client::new(&[endpoint.to_owned()], None);
            tokio::spawn(async move {
                let mgr = SubnetManager { client: client?, net, attrs: attrs(i), ttl: 3600 };
                // As the agent does: an etcd error (a timeout under load) is retried.
                let lease = node_agent::process::retry::retry("acquiring a subnet lease", || mgr.acquire(None)).await;
                anyhow::Ok((lease.subnet, start.elapsed()))
            })
        })
        .collect();
    let mut subnets = BTreeSet::new();
    let (mut failed, mut slowest, mut first_error) = (0, Duration::ZERO, None);
    for t in tasks {
        match t.await {
            Ok(Ok((s, at))) => {
                subnets.insert(s);
                slowest = slowest.max(at);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    let dup = n - failed - subnets.len() + subnets.intersection(&theirs).count();
    ensure!(
        failed == 0 && dup == 0,
        "lease storm of {n}: {failed} failed, {dup} duplicate subnets; first error: {}",
        first_error.unwrap_or_default()
    );
    let check = format!("{} distinct, 0 dup, 0 failed; {} flanneld leases kept", subnets.len(), theirs.len());
    Ok(Storm { total: slowest, check })
}

/// The baseline: N clients each granting an etcd lease and creating one key.
async fn plain_creates(endpoint: &str, n: usize) -> Result<Duration> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = Client::new(&[endpoint.to_owned()], None);
            tokio::spawn(async move {
                let client = client?;
                // Retried like the storm's nodes: etcd sheds load ("too many requests") at 10,000.
                let create = || async {
                    let id = client.grant(3600).await?;
                    ensure!(client.create(&format!("/bench/{i}"), attrs(i).to_json().as_bytes(), Some(id)).await?);
                    anyhow::Ok(())
                };
                node_agent::process::retry::retry("plain create", create).await;
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

fn peer_leases(n: usize) -> Vec<Lease> {
    (1..=n)
        .map(|i| {
            let subnet = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + ((i as u32) << 8)), 24).expect("valid");
            Lease { subnet, attrs: attrs(i), etcd_lease: 0 }
        })
        .collect()
}

/// The agent's backend programming N peers into a fresh flannel.1.
async fn program_routes(n: usize) -> Result<Duration> {
    let nl = Netlink::connect()?;
    let node = nl.link_by_name("eth0").await?.context("no eth0")?;
    let node_addr = Ipv4Net::new(NODE_IP, 16).expect("valid");
    let mut b = Backend::new(nl.clone(), network()?, node, node_addr, MacAddr([0x0a, 0x59, 0, 0, 0, 1]));
    b.configure("10.0.0.0/24".parse()?).await?;
    let leases = peer_leases(n);
    let start = Instant::now();
    b.sync(&leases).await?;
    let took = start.elapsed();
    let routes =
        nl.routes().await?.iter().filter(|r| r.dst.prefix_len() == 24 && r.dst.addr().octets()[0] == 10).count();
    ensure!(routes == n, "{routes} routes programmed, not {n}");
    if let Some(l) = nl.link_by_name("flannel.1").await? {
        nl.delete_link(l.index).await?;
    }
    Ok(took)
}

/// The baseline: iproute2 in batch mode (`bridge -batch`, `ip -batch`) making the same entries.
fn ip_batch(n: usize) -> Result<Duration> {
    sh(&format!("ip link add bench.2 type vxlan id 2 dstport 8472 local {NODE_IP} dev eth0 nolearning && ip addr add 10.0.0.0/32 dev bench.2 && ip link set bench.2 up"))?;
    let (mut ip, mut bridge) = (String::new(), String::new());
    for l in peer_leases(n) {
        let BackendData::Vxlan { vtep_mac, .. } = l.attrs.backend else { unreachable!() };
        let gw = l.subnet.addr();
        ip.push_str(&format!("neigh replace {gw} lladdr {vtep_mac} dev bench.2 nud permanent\n"));
        ip.push_str(&format!("route replace {} via {gw} dev bench.2 onlink\n", l.subnet));
        bridge.push_str(&format!("fdb append {vtep_mac} dev bench.2 dst {} self permanent\n", l.attrs.public_ip));
    }
    let (ip_file, bridge_file) = (tempfile::NamedTempFile::new()?, tempfile::NamedTempFile::new()?);
    std::fs::write(ip_file.path(), ip)?;
    std::fs::write(bridge_file.path(), bridge)?;
    let start = Instant::now();
    for (tool, file) in [("bridge", &bridge_file), ("ip", &ip_file)] {
        let out = Command::new(tool).arg("-batch").arg(file.path()).output()?;
        ensure!(out.status.success(), "{tool} -batch: {}", String::from_utf8_lossy(&out.stderr));
    }
    let took = start.elapsed();
    sh("ip link del bench.2")?;
    Ok(took)
}

struct WatchResult {
    route: (Duration, Duration),
    watch: (Duration, Duration),
    seen: usize,
    rss_mib: f64,
    etcd_rss_mib: f64,
    idle_cpu_pct: f64,
    idle_secs: f64,
}

/// The real agent follows peers put one by one; we see its routes appear.
async fn watch_latency(endpoint: &str, etcd_pid: u32, n: usize, quick: bool) -> Result<WatchResult> {
    let dir = tempfile::tempdir()?;
    let mut agent = start_agent(endpoint, dir.path())?;
    let client = Client::new(&[endpoint.to_owned()], None)?;
    // Route notifications, as the kernel sends them.
    let (mut conn, _handle, mut routes) = rtnetlink::new_connection()?;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    use rtnetlink::sys::AsyncSocket;
    conn.socket_mut().socket_mut().bind(&rtnetlink::sys::SocketAddr::new(0, RTMGRP_IPV4_ROUTE))?;
    tokio::spawn(conn);
    // The agent's own random subnet is not a peer's.
    let env = std::fs::read_to_string(dir.path().join("flannel/subnet.env"))?;
    let own: Ipv4Net = env
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .context("FLANNEL_SUBNET")?
        .parse::<Ipv4Net>()?
        .trunc();
    let peers: Vec<Lease> = peer_leases(n + 1).into_iter().filter(|l| l.subnet != own).take(n).collect();
    let expected: std::collections::HashSet<Ipv4Net> = peers.iter().map(|l| l.subnet).collect();
    let route_seen = tokio::spawn(async move {
        let mut seen: HashMap<Ipv4Net, Instant> = HashMap::new();
        while let Some((msg, _)) = routes.next().await {
            use netlink_packet_core::NetlinkPayload;
            use netlink_packet_route::route::{RouteAddress, RouteAttribute};
            use netlink_packet_route::RouteNetlinkMessage;
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = msg.payload {
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                });
                if let Some(ip) = dst {
                    if let Ok(net) = Ipv4Net::new(ip, r.header.destination_prefix_length) {
                        if expected.contains(&net) {
                            seen.entry(net).or_insert_with(Instant::now);
                        }
                        if seen.len() == expected.len() {
                            break;
                        }
                    }
                }
            }
        }
        seen
    });
    // The baseline: a plain watcher of the same keys.
    let (_, rev) = client.get_prefix(SUBNETS_PREFIX).await?;
    let mut watch = client.watch_prefix(SUBNETS_PREFIX, rev + 1).await?;
    let watch_seen = tokio::spawn(async move {
        let mut seen: HashMap<Vec<u8>, Instant> = HashMap::new();
        while seen.len() < n {
            match watch.next().await {
                Ok(Some(r)) => {
                    for e in r.events {
                        seen.entry(e.key().to_vec()).or_insert_with(Instant::now);
                    }
                }
                _ => break,
            }
        }
        seen
    });
    let mut put_at = Vec::with_capacity(n);
    for l in peers {
        let key = lease::key(l.subnet);
        put_at.push((l.subnet, key.clone(), Instant::now()));
        client.put(&key, l.attrs.to_json().as_bytes(), None).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let routes =
        tokio::time::timeout(Duration::from_secs(60), route_seen).await.context("routes did not all appear")??;
    let watched = tokio::time::timeout(Duration::from_secs(10), watch_seen).await.unwrap_or(Ok(HashMap::new()))?;
    let mut r_lat = Vec::new();
    let mut w_lat = Vec::new();
    for (subnet, key, at) in &put_at {
        if let Some(t) = routes.get(subnet) {
            r_lat.push(t.saturating_duration_since(*at));
        }
        if let Some(t) = watched.get(key.as_bytes()) {
            w_lat.push(t.saturating_duration_since(*at));
        }
    }
    ensure!(r_lat.len() == put_at.len(), "{} of {} peers' routes appeared", r_lat.len(), put_at.len());
    // Steady state: idle, then RSS and CPU over a quiet window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = agent.id();
    let idle = Duration::from_secs(if quick { 3 } else { 10 });
    let cpu0 = cpu_ticks(pid)?;
    tokio::time::sleep(idle).await;
    let cpu1 = cpu_ticks(pid)?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let result = WatchResult {
        route: percentiles(&mut r_lat),
        watch: percentiles(&mut w_lat),
        seen: r_lat.len(),
        rss_mib: rss_kib(pid)? / 1024.0,
        etcd_rss_mib: rss_kib(etcd_pid)? / 1024.0,
        idle_cpu_pct: (cpu1 - cpu0) as f64 / ticks / idle.as_secs_f64() * 100.0,
        idle_secs: idle.as_secs_f64(),
    };
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(result)
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn rss_kib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// `node-agent run` as a worker on eth0, with files in `dir`.
fn start_agent(endpoint: &str, dir: &std::path::Path) -> Result<Child> {
    let config = serde_json::json!({
        "cluster": "bench",
        "node": { "name": "bench-0", "role": "worker", "address": format!("{NODE_IP}/16"), "mac": "0a:58:00:00:00:01" },
        "etcd": { "endpoints": [endpoint] },
        "network": { "network": "10.0.0.0/8", "subnet_len": 24, "backend": { "type": "vxlan", "vni": 1, "port": 8472 } },
        "paths": {
            "run_flannel": dir.join("flannel"), "cni_conf_dir": dir.join("net.d"), "cni_ipam_dir": dir.join("ipam"),
            "state_dir": dir.join("state"),
        },
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_node-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("agent stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("ready role=worker") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        bail!("the agent did not become ready");
    }
    Ok(child)
}
