//! `imgbuild up` / `down`: the cluster's images booted in QEMU on this
//! machine. All VMs share one L2 segment (QEMU's multicast socket netdev)
//! inside a network namespace made for the cluster, so no packet leaves it.
//! Consoles go to files; readiness and probes are read from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use node_config::Role;
use sha2::{Digest, Sha256};

use crate::accel::{self, Accel};
use crate::cluster::{Cluster, Node};
use crate::ui;

const MCAST: &str = "230.0.0.1:1234";

/// Where a running cluster keeps its state: `OUT/.up/`.
pub fn state_dir(out: &Path) -> PathBuf {
    out.join(".up")
}

/// The namespace name for a build output (stable, so `down` finds it).
pub fn netns_name(out: &Path) -> String {
    let abs = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_owned());
    let h = Sha256::digest(abs.to_string_lossy().as_bytes());
    format!("imgbuild-{}", hex::encode(&h[..4]))
}

/// How `up` waits and reports.
#[derive(Debug, Clone, Copy)]
pub struct UpOptions {
    /// Probe pod-to-pod paths, then stop the cluster.
    pub check: bool,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// The final report as JSON on stdout.
    pub json: bool,
}

/// `imgbuild up` after its build: boot every node, follow each through its
/// stages, print the report, and (with `check`, or on failure) stop them.
pub fn run(cluster: &Cluster, out: &Path, opts: UpOptions) -> Result<()> {
    let started = Instant::now();
    boot(cluster, out, opts.check, opts.memory_mb)?;
    ui::note(&format!("booting {} VMs; consoles in {}/NODE.console", cluster.nodes.len(), state_dir(out).display()));
    let result = wait_for_cluster(cluster, out, opts, started);
    let st = statuses(cluster, out);
    // With --json, stdout holds the report alone; everything else is a note.
    let say = |line: &str| if opts.json { ui::note(line) } else { println!("{line}") };
    if opts.json {
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        print!("{}", report_json(cluster, &st, error.as_deref()));
    } else {
        print!("{}", report(cluster, &st));
    }
    say(&format!("elapsed since boot: {:.1}s", started.elapsed().as_secs_f64()));
    if opts.check || result.is_err() {
        let n = down(out)?;
        say(&format!("stopped {n} VMs"));
    } else {
        say(&format!("stop it with: imgbuild down --out {}", out.display()));
    }
    result?;
    if opts.check {
        say("check passed: every worker reached every other worker's probe pod with its own address");
    }
    Ok(())
}

/// Waits for every node to be ready (and, with `check`, every probe),
/// printing each stage a node reaches as it happens.
fn wait_for_cluster(cluster: &Cluster, out: &Path, opts: UpOptions, started: Instant) -> Result<()> {
    let mut seen = BTreeMap::new();
    let mut poll = || {
        let now = statuses(cluster, out);
        for line in progress(cluster, &seen, &now) {
            ui::note(&format!("+{:.1}s {line}", started.elapsed().as_secs_f64()));
        }
        seen = now.clone();
        if let Some((name, _)) = now.iter().find(|(_, s)| s.panicked) {
            bail!("{name}'s kernel panicked; see {}", state_dir(out).join(format!("{name}.console")).display());
        }
        Ok(now)
    };
    let ready = wait_until(opts.timeout, || Ok(poll()?.values().all(|s| s.ready_after.is_some())))?;
    let secs = opts.timeout.as_secs();
    if !ready {
        let st = statuses(cluster, out);
        let late: Vec<&str> = st.iter().filter(|(_, s)| s.ready_after.is_none()).map(|(n, _)| n.as_str()).collect();
        bail!("timed out after {secs}s: not ready: {}", late.join(", "));
    }
    if !opts.check {
        return Ok(());
    }
    let left = opts.timeout.saturating_sub(started.elapsed());
    let probed = wait_until(left, || Ok(missing_probes(cluster, &poll()?).is_empty()))?;
    if !probed {
        let missing = missing_probes(cluster, &statuses(cluster, out));
        bail!("timed out after {secs}s: probes not passed: {}", missing.join(", "));
    }
    Ok(())
}

/// Boots every node built into `out`; `probe` adds the connectivity probe.
pub fn boot(cluster: &Cluster, out: &Path, probe: bool, memory_mb: u32) -> Result<()> {
    let state = state_dir(out);
    if state.join("netns").exists() {
        bail!("a cluster from {} is already up; run `imgbuild down --out {}` first", out.display(), out.display());
    }
    std::fs::create_dir_all(&state)?;
    let ns = netns_name(out);
    run_cmd(Command::new("ip").args(["netns", "add", &ns]))
        .context("creating the cluster's network namespace (needs root)")?;
    std::fs::write(state.join("netns"), &ns)?;
    run_cmd(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
    let first = cluster.nodes.first().context("the cluster has no nodes")?;
    let (accel, why) = accel::choose(&out.join(&first.name).join("vmlinuz"));
    ui::note(&format!("accelerator: {} ({why})", accel.as_str()));
    for node in &cluster.nodes {
        start_vm(&ns, out, node, probe, memory_mb, accel).with_context(|| format!("starting {}", node.name))?;
    }
    Ok(())
}

fn start_vm(ns: &str, out: &Path, node: &Node, probe: bool, memory_mb: u32, accel: Accel) -> Result<()> {
    let dir = out.join(&node.name);
    let state = state_dir(out);
    let mut cmdline =
        std::fs::read_to_string(dir.join("cmdline")).with_context(|| format!("{} is not built", node.name))?;
    // QEMU's PC machine routes PCI interrupts without ACPI; skipping ACPI's
    // PCI handling saves about a second of kernel time per boot under TCG
    // (its AML interpreter, emulated). Only here: real machines may need it.
    // Without ACPI the PCI bus has no MSI domain: virtio's MSI-X attempt
    // would end in a kernel WARN (a tainted kernel) before falling back to
    // INTx, so go straight to INTx.
    cmdline = format!("{} pci=noacpi,nomsi", cmdline.trim());
    if probe && node.role.has_pods() {
        cmdline.push_str(" node-agent.probe");
    }
    let console = state.join(format!("{}.console", node.name));
    let _ = std::fs::remove_file(&console);
    let devices = Devices::for_node(node)?;
    let mut disk = Vec::new();
    if node.role == Role::Etcd {
        // A fresh blank data disk per `up`: the agent formats it and keeps etcd there.
        let path = state.join(format!("{}.data.img", node.name));
        std::fs::File::create(&path)?.set_len(256 << 20)?;
        disk = devices.disk(&path);
    }
    run_cmd(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "qemu-system-x86_64",
                "-accel",
                accel.as_str(),
                "-m",
                &memory_mb.to_string(),
                "-smp",
                "1",
            ])
            .args(["-no-reboot", "-display", "none", "-monitor", "none", "-daemonize"])
            .arg("-pidfile")
            .arg(state.join(format!("{}.pid", node.name)))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(dir.join("initrd.img"))
            .args(["-append", &cmdline])
            .args(["-netdev", &format!("socket,id=node,mcast={MCAST},localaddr=127.0.0.1")])
            .args(["-device", &format!("{},netdev=node,mac={}", devices.nic, node.mac)])
            .args(&devices.rng)
            .args(&disk),
    )?;
    Ok(())
}

/// The QEMU devices a node's drivers can drive: its image is built for
/// them, so a node with the hardware set boots on an emulated Intel NIC and
/// NVMe, as on a server.
#[derive(Debug, PartialEq, Eq)]
struct Devices {
    nic: &'static str,
    /// NVMe, else virtio-blk, else an IDE disk (PIIX, as `ata_piix` drives).
    disk: DiskBus,
    rng: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum DiskBus {
    Virtio,
    Nvme,
    Ide,
}

impl Devices {
    fn for_node(node: &Node) -> Result<Self> {
        let modules = crate::image::recipe::driver_modules(&node.drivers)?;
        let has = |m: &str| modules.iter().any(|x| crate::image::modules::normalize(x) == m);
        // In order of preference: QEMU's models and the drivers they need.
        let nics = [("virtio_net", "virtio-net-pci"), ("e1000e", "e1000e"), ("vmxnet3", "vmxnet3"), ("e1000", "e1000")];
        let nic = nics.iter().find(|(m, _)| has(m)).map_or("virtio-net-pci", |(_, model)| model);
        let disk = if has("virtio_blk") {
            DiskBus::Virtio
        } else if has("nvme") {
            DiskBus::Nvme
        } else {
            DiskBus::Ide
        };
        // Seeds the guest's CRNG at once: without it the first TLS handshake
        // to etcd waits on (and burns CPU for) jitter entropy.
        let rng = if has("virtio_rng") { vec!["-device".into(), "virtio-rng-pci".into()] } else { Vec::new() };
        Ok(Devices { nic, disk, rng })
    }

    fn disk(&self, path: &Path) -> Vec<String> {
        let file = format!("file={},format=raw", path.display());
        match self.disk {
            DiskBus::Virtio => vec!["-drive".into(), format!("{file},if=virtio")],
            DiskBus::Nvme => {
                vec![
                    "-drive".into(),
                    format!("{file},if=none,id=data"),
                    "-device".into(),
                    "nvme,drive=data,serial=data".into(),
                ]
            }
            DiskBus::Ide => vec!["-drive".into(), format!("{file},if=ide")],
        }
    }
}

/// Stops the VMs and removes the namespace.
pub fn down(out: &Path) -> Result<usize> {
    let state = state_dir(out);
    let mut stopped = 0;
    if let Ok(entries) = std::fs::read_dir(&state) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(&p).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    stopped += 1;
                }
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    if let Ok(ns) = std::fs::read_to_string(state.join("netns")) {
        let _ = Command::new("ip").args(["netns", "del", ns.trim()]).status();
        let _ = std::fs::remove_file(state.join("netns"));
    }
    Ok(stopped)
}

/// What one node's console says so far.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NodeStatus {
    /// PID 1 has started.
    pub booted: bool,
    /// The node process found its config.
    pub config: bool,
    /// Its subnet lease, once acquired.
    pub lease: Option<String>,
    /// Seconds from kernel start to `node-agent: ready`.
    pub ready_after: Option<f64>,
    pub subnet: Option<String>,
    /// Peers (node IPs) its probe pod reached without NAT.
    pub probed: Vec<String>,
    /// Its probe pod as a CRI sandbox made through its containerd.
    pub probe_pod: Option<ProbePod>,
    pub panicked: bool,
}

/// A worker's probe pod as its containerd made it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbePod {
    /// The CRI sandbox id.
    pub sandbox: String,
    /// Its pod IP, from `PodSandboxStatus`.
    pub ip: String,
}

impl std::fmt::Display for ProbePod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sandbox={} ip={}", self.sandbox, self.ip)
    }
}

/// Reads the agent's lines from a console log.
pub fn parse_console(text: &str) -> NodeStatus {
    let mut s = NodeStatus { panicked: text.contains("Kernel panic"), ..Default::default() };
    for line in text.lines() {
        let Some(rest) = line.split("node-agent: ").nth(1) else { continue };
        if rest.starts_with("PID 1 starting") {
            s.booted = true;
        } else if rest.starts_with("config from ") && !rest.contains(" failed: ") {
            s.config = true;
        } else if let Some(lease) = rest.strip_prefix("acquired lease ") {
            s.lease = lease.split_whitespace().next().map(str::to_owned);
        } else if let Some(ready) = rest.strip_prefix("ready ") {
            for kv in ready.split_whitespace() {
                if let Some(v) = kv.strip_prefix("uptime=") {
                    s.ready_after = v.trim_end_matches('s').parse().ok();
                }
                if let Some(v) = kv.strip_prefix("subnet=") {
                    s.subnet = Some(v.to_owned());
                }
            }
        } else if let Some(p) = rest.strip_prefix("probe pod up sandbox=") {
            let mut words = p.split_whitespace();
            if let (Some(id), Some(ip)) = (words.next(), words.next().and_then(|w| w.strip_prefix("ip="))) {
                s.probe_pod = Some(ProbePod { sandbox: id.to_owned(), ip: ip.to_owned() });
            }
        } else if let Some(p) = rest.strip_prefix("probe ok peer=") {
            if let Some(peer) = p.split_whitespace().next() {
                s.probed.push(peer.to_owned());
            }
        }
    }
    s
}

pub fn statuses(cluster: &Cluster, out: &Path) -> BTreeMap<String, NodeStatus> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let text = std::fs::read(state_dir(out).join(format!("{}.console", n.name))).unwrap_or_default();
            (n.name.clone(), parse_console(&String::from_utf8_lossy(&text)))
        })
        .collect()
}

/// Which worker pairs still have to reach each other, as "a -> b".
pub fn missing_probes(cluster: &Cluster, st: &BTreeMap<String, NodeStatus>) -> Vec<String> {
    let workers: Vec<&Node> = cluster.nodes.iter().filter(|n| n.role == Role::Worker).collect();
    let mut out = Vec::new();
    for a in &workers {
        for b in workers.iter().filter(|b| b.name != a.name) {
            if !st[&a.name].probed.contains(&b.static_ip().to_string()) {
                out.push(format!("{} -> {}", a.name, b.name));
            }
        }
        // Where the image runs kubelet's runtime, the probe pod must be its sandbox.
        if cluster.containerd && st[&a.name].probe_pod.is_none() {
            out.push(format!("{} probe sandbox", a.name));
        }
    }
    out
}

/// Polls until `done` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(false)
}

/// The per-node report printed by `up`.
pub fn report(cluster: &Cluster, st: &BTreeMap<String, NodeStatus>) -> String {
    let mut s = format!("{:<10} {:<7} {:<15} {:<14} {:>8}  PROBES\n", "NODE", "ROLE", "IP", "SUBNET", "READY");
    for n in &cluster.nodes {
        let x = &st[&n.name];
        let ready = x.ready_after.map(|t| format!("{t:.2}s")).unwrap_or_else(|| "-".into());
        let probes = if n.role.has_pods() { x.probed.join(",") } else { String::new() };
        s.push_str(&format!(
            "{:<10} {:<7} {:<15} {:<14} {:>8}  {}\n",
            n.name,
            n.role,
            n.static_ip(),
            x.subnet.as_deref().unwrap_or("-"),
            ready,
            probes
        ));
    }
    for n in cluster.nodes.iter().filter(|n| n.role.has_pods()) {
        if let Some(pod) = &st[&n.name].probe_pod {
            s.push_str(&format!("{} probe pod {pod}\n", n.name));
        }
    }
    s
}

/// The stages a node has reached, in order, as words for progress lines.
fn stages(n: &Node, s: &NodeStatus) -> Vec<String> {
    let mut out = Vec::new();
    if s.booted {
        out.push("booted".to_owned());
    }
    if s.config {
        out.push("config".to_owned());
    }
    if let Some(l) = &s.lease {
        out.push(format!("lease {l}"));
    }
    if let Some(t) = s.ready_after {
        out.push(format!("ready (kernel start + {t:.2}s)"));
    }
    if let Some(pod) = s.probe_pod.as_ref().filter(|_| n.role.has_pods()) {
        out.push(format!("probe pod {pod}"));
    }
    if n.role.has_pods() {
        out.extend(s.probed.iter().map(|peer| format!("probe reached {peer}")));
    }
    out
}

/// One line per stage a node reached since `before`, for people watching.
pub fn progress(
    cluster: &Cluster,
    before: &BTreeMap<String, NodeStatus>,
    now: &BTreeMap<String, NodeStatus>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for n in &cluster.nodes {
        let old = before.get(&n.name).map(|s| stages(n, s)).unwrap_or_default();
        for stage in stages(n, &now[&n.name]).into_iter().filter(|st| !old.contains(st)) {
            lines.push(format!("{} {stage}", n.name));
        }
    }
    lines
}

/// `up --json`'s report: every node's status and whether the run passed.
pub fn report_json(cluster: &Cluster, st: &BTreeMap<String, NodeStatus>, error: Option<&str>) -> String {
    let nodes: Vec<serde_json::Value> = cluster
        .nodes
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(&st[&n.name]).expect("a status serializes");
            v["name"] = n.name.clone().into();
            v["role"] = n.role.as_str().into();
            v["ip"] = n.static_ip().to_string().into();
            v
        })
        .collect();
    let report = serde_json::json!({ "passed": error.is_none(), "error": error, "nodes": nodes });
    let mut s = serde_json::to_string_pretty(&report).expect("JSON values serialize");
    s.push('\n');
    s
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DriverSet, Drivers};

    /// Each node boots on devices its image has drivers for.
    #[test]
    fn devices_follow_the_drivers() {
        let mut node = Cluster::embedded_default().nodes[0].clone();
        let d = Devices::for_node(&node).unwrap();
        assert_eq!((d.nic, &d.disk, d.rng.len()), ("virtio-net-pci", &DiskBus::Virtio, 2));
        node.drivers = Drivers::Set(DriverSet::Hardware);
        let d = Devices::for_node(&node).unwrap();
        assert_eq!((d.nic, &d.disk, d.rng.len()), ("e1000e", &DiskBus::Nvme, 0));
        assert_eq!(d.disk(Path::new("/d.img"))[3], "nvme,drive=data,serial=data");
        node.drivers = Drivers::Modules(vec!["vmxnet3".into(), "ata_piix".into()]);
        let d = Devices::for_node(&node).unwrap();
        assert_eq!((d.nic, &d.disk), ("vmxnet3", &DiskBus::Ide));
    }

    #[test]
    fn reads_consoles() {
        let text =
            "SeaBIOS\r\nnode-agent: PID 1 starting\nnode-agent: ready role=worker subnet=10.1.9.0/24 uptime=7.41s\n\
                    node-agent: probe pod up sandbox=5f0c2a ip=10.1.9.2 uptime=9.1s\n\
                    node-agent: probe ok peer=172.17.8.104 pod=10.1.28.2 seen-as=10.1.9.2\n";
        let s = parse_console(text);
        assert_eq!(s.ready_after, Some(7.41));
        assert!(s.booted && !s.config && s.lease.is_none());
        assert_eq!(s.subnet.as_deref(), Some("10.1.9.0/24"));
        assert_eq!(s.probed, ["172.17.8.104"]);
        assert!(!s.panicked);
        let c = Cluster::embedded_default();
        let mut st: BTreeMap<String, NodeStatus> =
            c.nodes.iter().map(|n| (n.name.clone(), NodeStatus::default())).collect();
        assert_eq!(s.probe_pod.as_ref().map(|p| p.to_string()).as_deref(), Some("sandbox=5f0c2a ip=10.1.9.2"));
        assert_eq!(
            missing_probes(&c, &st),
            ["worker-1 -> worker-2", "worker-1 probe sandbox", "worker-2 -> worker-1", "worker-2 probe sandbox"]
        );
        st.insert("worker-1".into(), s);
        assert_eq!(missing_probes(&c, &st), ["worker-2 -> worker-1", "worker-2 probe sandbox"]);
        let report = report(&c, &st);
        assert!(report.contains("worker-1   worker  172.17.8.103    10.1.9.0/24       7.41s  172.17.8.104"));
        assert!(report.contains("\nworker-1 probe pod sandbox=5f0c2a ip=10.1.9.2\n"), "{report}");
    }
}
