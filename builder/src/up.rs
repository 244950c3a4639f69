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

use crate::cluster::{Cluster, Node};

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

/// Boots every node built into `out`; `probe` adds the connectivity probe.
pub fn boot(cluster: &Cluster, out: &Path, probe: bool, memory_mb: u32) -> Result<()> {
    let state = state_dir(out);
    if state.join("netns").exists() {
        bail!("a cluster from {} is already up; run `imgbuild down --out {}` first", out.display(), out.display());
    }
    std::fs::create_dir_all(&state)?;
    let ns = netns_name(out);
    run(Command::new("ip").args(["netns", "add", &ns]))
        .context("creating the cluster's network namespace (needs root)")?;
    std::fs::write(state.join("netns"), &ns)?;
    run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
    for node in &cluster.nodes {
        start_vm(&ns, out, node, probe, memory_mb).with_context(|| format!("starting {}", node.name))?;
    }
    Ok(())
}

fn start_vm(ns: &str, out: &Path, node: &Node, probe: bool, memory_mb: u32) -> Result<()> {
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
    let mut disk = Vec::new();
    if node.role == Role::Etcd {
        // A fresh blank data disk per `up`: the agent formats it and keeps etcd there.
        let path = state.join(format!("{}.data.img", node.name));
        std::fs::File::create(&path)?.set_len(256 << 20)?;
        disk = vec!["-drive".to_owned(), format!("file={},if=virtio,format=raw", path.display())];
    }
    run(Command::new("ip")
        .args(["netns", "exec", ns, "qemu-system-x86_64", "-accel", "tcg", "-m", &memory_mb.to_string(), "-smp", "1"])
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
        .args(["-device", &format!("virtio-net-pci,netdev=node,mac={}", node.mac)])
        // Seeds the guest's CRNG at once: without it the first TLS handshake
        // to etcd waits on (and burns CPU for) jitter entropy.
        .args(["-device", "virtio-rng-pci"])
        .args(&disk))?;
    Ok(())
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    /// Seconds from kernel start to `node-agent: ready`.
    pub ready_after: Option<f64>,
    pub subnet: Option<String>,
    /// Peers (node IPs) its probe pod reached without NAT.
    pub probed: Vec<String>,
    pub panicked: bool,
}

/// Reads the agent's lines from a console log.
pub fn parse_console(text: &str) -> NodeStatus {
    let mut s = NodeStatus { panicked: text.contains("Kernel panic"), ..Default::default() };
    for line in text.lines() {
        let Some(rest) = line.split("node-agent: ").nth(1) else { continue };
        if let Some(ready) = rest.strip_prefix("ready ") {
            for kv in ready.split_whitespace() {
                if let Some(v) = kv.strip_prefix("uptime=") {
                    s.ready_after = v.trim_end_matches('s').parse().ok();
                }
                if let Some(v) = kv.strip_prefix("subnet=") {
                    s.subnet = Some(v.to_owned());
                }
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
            if !st[&a.name].probed.contains(&b.ip.to_string()) {
                out.push(format!("{} -> {}", a.name, b.name));
            }
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
            n.ip,
            x.subnet.as_deref().unwrap_or("-"),
            ready,
            probes
        ));
    }
    s
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consoles() {
        let text =
            "SeaBIOS\r\nnode-agent: PID 1 starting\nnode-agent: ready role=worker subnet=10.1.9.0/24 uptime=7.41s\n\
                    node-agent: probe ok peer=172.17.8.104 pod=10.1.28.254 seen-as=10.1.9.254\n";
        let s = parse_console(text);
        assert_eq!(s.ready_after, Some(7.41));
        assert_eq!(s.subnet.as_deref(), Some("10.1.9.0/24"));
        assert_eq!(s.probed, ["172.17.8.104"]);
        assert!(!s.panicked);
        let c = Cluster::embedded_default();
        let mut st: BTreeMap<String, NodeStatus> =
            c.nodes.iter().map(|n| (n.name.clone(), NodeStatus::default())).collect();
        assert_eq!(missing_probes(&c, &st), ["worker-1 -> worker-2", "worker-2 -> worker-1"]);
        st.insert("worker-1".into(), s);
        assert_eq!(missing_probes(&c, &st), ["worker-2 -> worker-1"]);
        assert!(report(&c, &st).contains("worker-1   worker  172.17.8.103    10.1.9.0/24       7.41s  172.17.8.104"));
    }
}
