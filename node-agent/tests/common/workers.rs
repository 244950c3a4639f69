//! A worker host with kubelet's runtime: a network namespace, the agent
//! (real etcd) running Debian's containerd, and a CRI client to it.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use testkit::cri::Cri;

/// One test at a time: containerd keeps sandbox network namespaces in the
/// host's /var/run/netns, which the leftover check counts.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The image the test's containers run: the static agent, serving probes.
pub const PROBE_IMAGE: &str = "imgbuild.local/probe:test";

/// A worker: its namespace, agent, and containerd's paths.
pub struct Worker {
    pub ns: Ns,
    pub dir: tempfile::TempDir,
    pub agent: Agent,
    pub spec: node_config::Containerd,
    pub subnet: ipnet::Ipv4Net,
}

impl Worker {
    pub fn start(lan: &Lan, name: &str, ip: &str, etcd: &str) -> Worker {
        Worker::start_with(lan, name, ip, etcd, false)
    }

    /// With `policy`, the agent enforces NetworkPolicy: its endpoint plugin
    /// goes in a CNI plugin folder of the worker's own, beside Debian's.
    pub fn start_with(lan: &Lan, name: &str, ip: &str, etcd: &str, policy: bool) -> Worker {
        let ns = Ns::new(name);
        lan.attach(&ns, &format!("{ip}/24"));
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(dir.path(), name, "worker", &format!("{ip}/24"), etcd, "vxlan");
        let spec = node_config::Containerd::under(dir.path());
        let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        json["containerd"] = serde_json::to_value(&spec).unwrap();
        if policy {
            enforce_policy(&mut json, dir.path());
        }
        std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        let agent = start_agent_host_mounts(&ns, &config);
        let ready = agent.wait_for("node-agent: ready role=worker subnet=", 60);
        let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        agent.wait_for("containerd ready", 90);
        let w = Worker { ns, dir, agent, spec, subnet };
        w.import_probe_image();
        w
    }

    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.spec.socket).args(["--namespace", "k8s.io"]);
        c
    }

    /// The user's image, built locally from a static binary, as `ctr
    /// images import` loads one.
    pub fn import_probe_image(&self) {
        self.import_image(PROBE_IMAGE, &["probe", "serve"], "65534:65534");
    }

    /// Imports an image of the static agent running `args`, as `user`.
    pub fn import_image(&self, name: &str, args: &[&str], user: &str) {
        let agent = std::fs::read(agent_bin()).unwrap();
        let mut entrypoint = vec!["/agent".to_owned()];
        entrypoint.extend(args.iter().map(|a| a.to_string()));
        let image = node_agent::runtime::oci::Image {
            name: name.into(),
            files: vec![("agent".into(), 0o755, agent)],
            entrypoint,
            user: user.into(),
        };
        let tar = self.dir.path().join("image.tar");
        std::fs::write(&tar, image.layout_tar().unwrap()).unwrap();
        run(self.ctr().args(["images", "import"]).arg(&tar));
    }

    /// RunPodSandbox, failing with containerd's log when it fails.
    pub fn run_sandbox(&self, cri: &mut Cri, config: &testkit::cri::PodSandboxConfig) -> String {
        cri.run_sandbox(config).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(self.dir.path().join("var/lib/node-agent/containerd.log"));
            let log = log.unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("RunPodSandbox: {e}\ncontainerd's log, last lines first:\n{}", tail.join("\n"))
        })
    }

    /// containerd's pid, from the agent's last "started containerd" line.
    pub fn containerd_pid(&self) -> u32 {
        let log = self.agent.log();
        let line = log.lines().rev().find(|l| l.contains("started containerd (pid ")).expect("containerd started");
        line.split("(pid ").nth(1).unwrap().trim_end_matches(')').parse().unwrap()
    }

    /// What a sandbox could leave behind on this worker: links, bridge
    /// ports, host-local reservations, sandbox namespaces, and the
    /// iptables and nftables rules (counters left out).
    pub fn leftovers(&self) -> Vec<String> {
        let ipam = self.dir.path().join("var/lib/cni/networks/imgbuild");
        let reserved: BTreeSet<String> = std::fs::read_dir(&ipam)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let reserved: Vec<String> =
            reserved.into_iter().filter(|n| n != "lock" && !n.starts_with("last_reserved_ip")).collect();
        let pid = self.containerd_pid();
        vec![
            format!("links: {}", self.ns.sh("ls /sys/class/net | sort | tr '\\n' ' '")),
            format!("cni0 ports: {}", self.ns.sh("ls /sys/class/net/cni0/brif 2>/dev/null | tr '\\n' ' '")),
            format!("reserved: {reserved:?}"),
            format!(
                "netns: {}",
                self.ns.sh(&format!("nsenter -t {pid} -m ls /var/run/netns | grep -c '^cni-' || true"))
            ),
            self.ns.sh("iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'"),
            self.ns.sh("nft list ruleset 2>/dev/null | grep -v 'counter packets' || true"),
        ]
    }

    /// The test's containers are not the agent's children: once containerd
    /// is gone (with the agent), end its shims and their containers.
    pub fn clean_up(&mut self) {
        self.agent.kill();
        end_containerd_leftovers(&self.spec);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.clean_up();
    }
}

pub fn two_workers() -> (Lan, Ns, Etcd, Worker, Worker) {
    two_workers_with(false)
}

pub fn two_workers_with(policy: bool) -> (Lan, Ns, Etcd, Worker, Worker) {
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let w1 = Worker::start_with(&lan, "w1", "172.17.8.103", &etcd.endpoint, policy);
    let w2 = Worker::start_with(&lan, "w2", "172.17.8.104", &etcd.endpoint, policy);
    (lan, etcd_ns, etcd, w1, w2)
}

/// `from` probes `to_ip` from inside its container; the answer says the
/// address the receiver saw, which must be the sender's pod IP.
pub fn probe(cri: &mut Cri, container: &str, to_ip: &str, from_ip: &str) {
    let to = format!("{to_ip}:7946");
    let (code, out) = cri.exec(container, &["/agent", "probe", "send", "--to", &to, "--tries", "20"]);
    assert_eq!(code, 0, "probe {from_ip} -> {to}: {out}");
    assert!(out.contains(&format!("it saw {from_ip} (we are {from_ip})")), "{out}");
}

pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
