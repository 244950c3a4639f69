//! Test hosts on one machine: network namespaces on a bridge, a real etcd,
//! and agents run as processes inside the namespaces. Nothing here touches
//! the host's own interfaces; every name is unique to this test process.
#![allow(dead_code)]

pub mod workers;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary cargo built (shared with the builder's tests, where
/// it sits beside `imgbuild`).
pub fn agent_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match option_env!("CARGO_BIN_EXE_node-agent") {
        Some(p) => p.to_owned(),
        None => match option_env!("CARGO_BIN_EXE_imgbuild") {
            Some(imgbuild) => Path::new(imgbuild).with_file_name("node-agent").display().to_string(),
            None => panic!("no agent binary: run the tests with cargo test --workspace"),
        },
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!("ib{}-{tag}{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("running {cmd:?}: {e} (are the test dependencies installed? bash tests/install-deps.sh)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = unique(tag);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name };
        ns.sh("ip link set lo up");
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a shell line inside; panics on failure; returns stdout.
    pub fn sh(&self, line: &str) -> String {
        String::from_utf8_lossy(&run(self.cmd("sh").args(["-c", line])).stdout).into_owned()
    }

    /// Runs a shell line inside; returns success and combined output.
    pub fn try_sh(&self, line: &str) -> (bool, String) {
        let out = self.cmd("sh").args(["-c", line]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// An L2 segment: a bridge in its own namespace that hosts plug into.
pub struct Lan {
    pub ns: Ns,
    ports: AtomicU32,
}

impl Lan {
    pub fn new() -> Lan {
        let ns = Ns::new("lan");
        ns.sh("ip link add br0 type bridge && ip link set br0 up");
        Lan { ns, ports: AtomicU32::new(0) }
    }

    /// Plugs `host` in as `eth0` with `cidr` (e.g. 172.17.8.103/24).
    pub fn attach(&self, host: &Ns, cidr: &str) {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.ns.sh(&format!("ip link add {port} type veth peer name eth0 netns {}", host.name));
        self.ns.sh(&format!("ip link set {port} master br0 up"));
        host.sh(&format!("ip addr add {cidr} dev eth0 && ip link set eth0 up"));
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real etcd 3.4 (v3 API only), killed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    peer_url: String,
    ns: Option<String>,
    _dir: tempfile::TempDir,
}

fn spawn_etcd(ns: Option<&str>, dir: &Path, endpoint: &str, peer_url: &str) -> Child {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "etcd"]);
            c
        }
        None => Command::new("etcd"),
    };
    cmd.arg("--name=test")
        .arg(format!("--data-dir={}", dir.display()))
        .arg(format!("--listen-client-urls={endpoint}"))
        .arg(format!("--advertise-client-urls={endpoint}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .arg("--enable-v2=false")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("etcd is installed (bash tests/install-deps.sh)")
}

impl Etcd {
    /// On `ip` inside `ns`, or on loopback when `ns` is None.
    pub fn start(ns: Option<&Ns>, ip: &str) -> Etcd {
        let (client, peer) = match ns {
            Some(_) => (2379, 2380),
            None => (free_port(), free_port()),
        };
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("http://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        let ns = ns.map(|n| n.name.clone());
        let child = spawn_etcd(ns.as_deref(), dir.path(), &endpoint, &peer_url);
        let etcd = Etcd { child, endpoint, peer_url, ns, _dir: dir };
        etcd.wait_healthy();
        etcd
    }

    /// SIGKILL, then the same member again on the same data dir.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn_etcd(self.ns.as_deref(), self._dir.path(), &self.endpoint, &self.peer_url);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctl(&["endpoint", "health"]).0 {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs etcdctl (v3) against this etcd.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out =
            cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoint)).args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let (ok, out) = self.ctl(&["get", "--print-value-only", key]);
        assert!(ok, "{out}");
        let v = out.trim_end_matches('\n').to_owned();
        (!v.is_empty()).then_some(v)
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (ok, out) = self.ctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(ok, "{out}");
        out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node agent process and its console lines, killed on drop.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn spawn(mut cmd: Command) -> Agent {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Agent { child, lines }
    }

    /// Waits for a line containing `needle` after the first `skip` lines.
    pub fn wait_for_after(&self, skip: usize, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().skip(skip).find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no line with {needle:?} in {secs}s; the agent said:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, needle: &str, secs: u64) -> String {
        self.wait_for_after(0, needle, secs)
    }

    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `secs` for the process to end by itself.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every path a test host's agent writes, inside `dir`; Debian's CNI plugins.
pub fn paths_in(dir: &Path) -> node_config::Paths {
    let p = |s: &str| dir.join(s);
    node_config::Paths {
        run_flannel: p("run/flannel"),
        cni_conf_dir: p("etc/cni/net.d"),
        cni_bin_dir: "/usr/lib/cni".into(),
        cni_ipam_dir: p("var/lib/cni/networks"),
        state_dir: p("var/lib/node-agent"),
        etcd_data_dir: p("var/lib/etcd"),
        ..Default::default()
    }
}

/// A node config for a test host, every path inside `dir`.
pub fn node_config(dir: &Path, name: &str, role: &str, cidr: &str, etcd: &str, backend: &str) -> PathBuf {
    let cfg = serde_json::json!({
        "cluster": "test",
        "node": { "name": name, "role": role, "address": cidr, "mac": "52:54:00:00:00:01" },
        "etcd": { "endpoints": [etcd] },
        "network": { "network": "10.1.0.0/16", "subnet_len": 24, "backend": { "type": backend, "vni": 1, "port": 8472 } },
        "paths": paths_in(dir)
    });
    let path = dir.join("config.json");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    path
}

/// Turns NetworkPolicy enforcement on in a node config (`json`) whose
/// paths are in `dir`: its endpoint plugin goes in a CNI plugin folder of
/// the host's own, beside Debian's plugins.
pub fn enforce_policy(json: &mut serde_json::Value, dir: &Path) {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for plugin in std::fs::read_dir("/usr/lib/cni").unwrap() {
        let plugin = plugin.unwrap();
        std::os::unix::fs::symlink(plugin.path(), bin.join(plugin.file_name())).unwrap();
    }
    json["paths"]["cni_bin_dir"] = bin.to_string_lossy().into();
    json["policy"] = serde_json::json!({ "run_dir": dir.join("run/policy") });
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts `node-agent run` in `ns`'s network namespace alone, keeping the
/// host's mounts: containerd's runc needs the host's cgroup mounts, which
/// `ip netns exec` hides under a fresh sysfs.
pub fn start_agent_host_mounts(ns: &Ns, config: &Path) -> Agent {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display())).arg(agent_bin()).arg("run").arg("--config").arg(config);
    Agent::spawn(cmd)
}

/// Starts `node-agent run` inside `ns`.
pub fn start_agent(ns: &Ns, config: &Path) -> Agent {
    let mut cmd = ns.cmd(agent_bin());
    cmd.arg("run").arg("--config").arg(config);
    Agent::spawn(cmd)
}

/// Deletes, with force, every container runc keeps state for under
/// `root`: what a containerd that is gone left running.
pub fn delete_runc_containers(root: &Path) {
    let out = Command::new("runc").arg("--root").arg(root).args(["list", "-q"]).output();
    for id in out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        let _ = Command::new("runc").arg("--root").arg(root).args(["delete", "--force", id]).status();
    }
}

/// Ends what the containerd of `spec` started, once it is gone itself: its
/// shims, then their containers.
pub fn end_containerd_leftovers(spec: &node_config::Containerd) {
    // `[-]` keeps pkill from reading the pattern as an option.
    let _ = Command::new("pkill").args(["-9", "-f"]).arg(format!("[-]address {}", spec.socket.display())).status();
    delete_runc_containers(&spec.state.join("runc/k8s.io"));
}
