//! Pods through kubelet's own runtime, as kubelet asks for them: the agent
//! on each worker (a network namespace host, real etcd) writes containerd's
//! config and runs Debian's containerd, and this test speaks CRI to it over
//! its socket. Sandboxes get addresses from that worker's lease, containers
//! in them reach each other across the VXLAN overlay without NAT, removing
//! a sandbox gives everything back, and containerd killed mid-run comes
//! back with the pods still on the network.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use testkit::cri::{pod_config, Cri};

/// One test at a time: containerd keeps sandbox network namespaces in the
/// host's /var/run/netns, which the leftover check counts.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The image the test's containers run: the static agent, serving probes.
const PROBE_IMAGE: &str = "imgbuild.local/probe:test";

/// A worker: its namespace, agent, and containerd's paths.
struct Worker {
    ns: Ns,
    dir: tempfile::TempDir,
    agent: Agent,
    spec: node_config::Containerd,
    subnet: ipnet::Ipv4Net,
}

impl Worker {
    fn start(lan: &Lan, name: &str, ip: &str, etcd: &str) -> Worker {
        Worker::start_with(lan, name, ip, etcd, false)
    }

    /// With `policy`, the agent enforces NetworkPolicy: its endpoint plugin
    /// goes in a CNI plugin folder of the worker's own, beside Debian's.
    fn start_with(lan: &Lan, name: &str, ip: &str, etcd: &str, policy: bool) -> Worker {
        let ns = Ns::new(name);
        lan.attach(&ns, &format!("{ip}/24"));
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(dir.path(), name, "worker", &format!("{ip}/24"), etcd, "vxlan");
        let spec = node_config::Containerd::under(dir.path());
        let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        json["containerd"] = serde_json::to_value(&spec).unwrap();
        if policy {
            let bin = dir.path().join("cni-bin");
            std::fs::create_dir_all(&bin).unwrap();
            for plugin in std::fs::read_dir("/usr/lib/cni").unwrap() {
                let plugin = plugin.unwrap();
                std::os::unix::fs::symlink(plugin.path(), bin.join(plugin.file_name())).unwrap();
            }
            json["paths"]["cni_bin_dir"] = bin.to_string_lossy().into();
            json["policy"] = serde_json::json!({ "run_dir": dir.path().join("run/policy") });
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

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.spec.socket).args(["--namespace", "k8s.io"]);
        c
    }

    /// The user's image, built locally from a static binary, as `ctr
    /// images import` loads one.
    fn import_probe_image(&self) {
        let agent = std::fs::read(agent_bin()).unwrap();
        let image = node_agent::runtime::oci::Image {
            name: PROBE_IMAGE.into(),
            files: vec![("agent".into(), 0o755, agent)],
            entrypoint: vec!["/agent".into(), "probe".into(), "serve".into()],
            user: "65534:65534".into(),
        };
        let tar = self.dir.path().join("probe.tar");
        std::fs::write(&tar, image.layout_tar().unwrap()).unwrap();
        run(self.ctr().args(["images", "import"]).arg(&tar));
    }

    /// RunPodSandbox, failing with containerd's log when it fails.
    fn run_sandbox(&self, cri: &mut Cri, config: &testkit::cri::PodSandboxConfig) -> String {
        cri.run_sandbox(config).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(self.dir.path().join("var/lib/node-agent/containerd.log"));
            let log = log.unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("RunPodSandbox: {e}\ncontainerd's log, last lines first:\n{}", tail.join("\n"))
        })
    }

    /// containerd's pid, from the agent's last "started containerd" line.
    fn containerd_pid(&self) -> u32 {
        let log = self.agent.log();
        let line = log.lines().rev().find(|l| l.contains("started containerd (pid ")).expect("containerd started");
        line.split("(pid ").nth(1).unwrap().trim_end_matches(')').parse().unwrap()
    }

    /// What a sandbox could leave behind on this worker: links, bridge
    /// ports, host-local reservations, sandbox namespaces, and the
    /// iptables and nftables rules (counters left out).
    fn leftovers(&self) -> Vec<String> {
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
    fn clean_up(&mut self) {
        self.agent.kill();
        end_containerd_leftovers(&self.spec);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.clean_up();
    }
}

fn two_workers() -> (Lan, Ns, Etcd, Worker, Worker) {
    two_workers_with(false)
}

fn two_workers_with(policy: bool) -> (Lan, Ns, Etcd, Worker, Worker) {
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
fn probe(cri: &mut Cri, container: &str, to_ip: &str, from_ip: &str) {
    let to = format!("{to_ip}:7946");
    let (code, out) = cri.exec(container, &["/agent", "probe", "send", "--to", &to, "--tries", "20"]);
    assert_eq!(code, 0, "probe {from_ip} -> {to}: {out}");
    assert!(out.contains(&format!("it saw {from_ip} (we are {from_ip})")), "{out}");
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pods_made_through_cri_reach_each_other_across_workers() {
    let _one = one_at_a_time();
    let (_lan, _etcd_ns, _etcd, w1, w2) = two_workers();
    let mut cri1 = Cri::connect(&w1.spec.socket);
    let mut cri2 = Cri::connect(&w2.spec.socket);

    // containerd runs the config the agent wrote: our pause image, our conflist.
    let config = std::fs::read_to_string(&w1.spec.config).unwrap();
    assert!(config.contains("sandbox_image = \"imgbuild.local/pause:"), "{config}");
    assert!(config.contains(&format!("conf_dir = \"{}", w1.dir.path().display())), "{config}");

    let a_cfg = pod_config("x", "a");
    let b_cfg = pod_config("y", "b");
    let a = w1.run_sandbox(&mut cri1, &a_cfg);
    let b = w2.run_sandbox(&mut cri2, &b_cfg);
    let a_ip = cri1.sandbox_ip(&a);
    let b_ip = cri2.sandbox_ip(&b);
    assert!(w1.subnet.contains(&a_ip.parse::<std::net::Ipv4Addr>().unwrap()), "{a_ip} not in {}", w1.subnet);
    assert!(w2.subnet.contains(&b_ip.parse::<std::net::Ipv4Addr>().unwrap()), "{b_ip} not in {}", w2.subnet);
    // host-local reserved it for this sandbox, by the id CRI gave CNI.
    let reservation = w1.dir.path().join("var/lib/cni/networks/imgbuild").join(&a_ip);
    assert!(std::fs::read_to_string(&reservation).unwrap().starts_with(&a), "reservation names the sandbox");

    let ca = cri1.start_container(&a, &a_cfg, "probe", PROBE_IMAGE);
    let cb = cri2.start_container(&b, &b_cfg, "probe", PROBE_IMAGE);
    probe(&mut cri1, &ca, &b_ip, &a_ip);
    probe(&mut cri2, &cb, &a_ip, &b_ip);

    // containerd killed mid-run: the agent starts it again, and the pods
    // it left running kept their network.
    let before = w1.containerd_pid();
    Command::new("kill").args(["-9", &before.to_string()]).status().unwrap();
    wait_until("containerd to come back", 60, || {
        w1.agent.log().matches("containerd ready").count() >= 2 && w1.containerd_pid() != before
    });
    probe(&mut cri2, &cb, &a_ip, &b_ip);
    let mut cri1 = Cri::connect(&w1.spec.socket);
    probe(&mut cri1, &ca, &b_ip, &a_ip);
    assert_eq!(cri1.sandbox_ip(&a), a_ip);

    // Stop + remove: CNI DEL gave the address and the veth back.
    cri1.remove_sandbox(&a);
    assert!(!reservation.exists(), "{} is still reserved", a_ip);
    assert_eq!(w1.ns.sh("ip -o link show type veth | grep -v eth0 || true"), "");
    cri2.remove_sandbox(&b);
}

#[test]
fn fifty_sandboxes_come_and_go_without_leftovers() {
    let _one = one_at_a_time();
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let mut w = Worker::start(&lan, "w1", "172.17.8.103", &etcd.endpoint);
    let mut cri = Cri::connect(&w.spec.socket);
    // One pod first: portmap's chains and the bridge stay once made.
    let first = w.run_sandbox(&mut cri, &pod_config("default", "first"));
    cri.remove_sandbox(&first);
    let baseline = w.leftovers();
    let mut ids = Vec::new();
    let mut ips = BTreeSet::new();
    for i in 0..50 {
        let id = w.run_sandbox(&mut cri, &pod_config("default", &format!("pod-{i}")));
        let ip = cri.sandbox_ip(&id);
        assert!(w.subnet.contains(&ip.parse::<std::net::Ipv4Addr>().unwrap()), "{ip} not in {}", w.subnet);
        ips.insert(ip);
        ids.push(id);
    }
    assert_eq!(ips.len(), 50, "every sandbox its own address");
    assert_eq!(w.ns.sh("ls /sys/class/net/cni0/brif | wc -l").trim(), "50");
    for id in &ids {
        cri.remove_sandbox(id);
    }
    assert_eq!(w.leftovers(), baseline, "50 sandboxes left something behind");

    // A corrupt pause image in containerd's store is found and imported
    // again on the next start; sandboxes work after it.
    let blobs = node_agent::runtime::oci::pause_image(&std::fs::read(agent_bin()).unwrap()).blobs().unwrap();
    let config_blob: PathBuf =
        w.spec.root.join("io.containerd.content.v1.content/blobs/sha256").join(blobs[1].hex_digest());
    std::fs::write(&config_blob, b"{\"not\": \"the pause config\"}").unwrap();
    let before = w.containerd_pid();
    Command::new("kill").args(["-9", &before.to_string()]).status().unwrap();
    wait_until("containerd to come back", 60, || w.agent.log().matches("containerd ready").count() >= 2);
    w.agent.wait_for("is corrupt; importing the image again", 1);
    assert_eq!(std::fs::read(&config_blob).unwrap(), blobs[1].bytes, "the blob is whole again");
    let mut cri = Cri::connect(&w.spec.socket);
    let again = w.run_sandbox(&mut cri, &pod_config("default", "after-repair"));
    assert!(w.subnet.contains(&cri.sandbox_ip(&again).parse::<std::net::Ipv4Addr>().unwrap()));
    cri.remove_sandbox(&again);
    w.clean_up();
}

/// containerd run by the test (no agent) in `ns` with `conflist` as its
/// one network and the image's settings, the pause image imported: the
/// baseline of the sandbox benchmark.
struct PlainRuntime {
    _dir: tempfile::TempDir,
    spec: node_config::Containerd,
    process: Agent,
}

impl PlainRuntime {
    fn start(ns: &Ns, conflist: &str) -> PlainRuntime {
        let dir = tempfile::tempdir().unwrap();
        let spec = node_config::Containerd::under(dir.path());
        let (conf_dir, ipam) = (dir.path().join("net.d"), dir.path().join("ipam"));
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-plain.conflist"), conflist.replace("IPAM_DIR", &ipam.display().to_string()))
            .unwrap();
        let agent = std::fs::read(agent_bin()).unwrap();
        let pause = node_agent::runtime::oci::pause_image(&agent);
        let config = node_config::containerd::ConfigFile {
            spec: &spec,
            cni_conf_dir: &conf_dir,
            cni_bin_dir: Path::new("/usr/lib/cni"),
            // This machine's root lacks CAP_SYS_RESOURCE, as the agent finds out for itself.
            host: node_config::containerd::Host::Image { sandbox_image: &pause.name, restrict_oom_score_adj: true },
        };
        std::fs::create_dir_all(spec.config.parent().unwrap()).unwrap();
        std::fs::write(&spec.config, config.render()).unwrap();
        // The host's mounts, as the agent's containerd (see start_agent_host_mounts).
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display())).arg("containerd").arg("--config").arg(&spec.config);
        let process = Agent::spawn(cmd);
        wait_until("the baseline containerd's socket", 60, || {
            std::os::unix::net::UnixStream::connect(&spec.socket).is_ok()
        });
        let tar = dir.path().join("pause.tar");
        std::fs::write(&tar, pause.layout_tar().unwrap()).unwrap();
        run(Command::new("ctr")
            .arg("--address")
            .arg(&spec.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar));
        PlainRuntime { _dir: dir, spec, process }
    }
}

impl Drop for PlainRuntime {
    fn drop(&mut self) {
        self.process.kill();
        end_containerd_leftovers(&self.spec);
    }
}

/// Milliseconds from RunPodSandbox sent to the IP read back from
/// PodSandboxStatus.
fn time_to_ip(cri: &mut Cri, name: &str) -> (f64, String) {
    let start = Instant::now();
    let id = cri.run_sandbox(&pod_config("bench", name)).unwrap();
    let ip = cri.sandbox_ip(&id);
    assert!(!ip.is_empty(), "sandbox {name} has no IP");
    (start.elapsed().as_secs_f64() * 1000.0, id)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The benchmark `bench/run.sh` runs: sandbox requested → IP in
/// `PodSandboxStatus`, p50 and p99 over 50 pods, through the agent's
/// containerd (our conflist on the VXLAN overlay) against the same
/// containerd with a plain `bridge` + `host-local` conflist and no overlay,
/// requests alternated between the two. Prints Markdown table rows.
#[test]
#[ignore = "a benchmark: bench/run.sh runs it"]
fn bench_sandbox_to_ip() {
    let _one = one_at_a_time();
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let w = Worker::start(&lan, "w1", "172.17.8.103", &etcd.endpoint);
    let plain_ns = Ns::new("plain");
    let plain = PlainRuntime::start(
        &plain_ns,
        r#"{"cniVersion": "1.0.0", "name": "plain", "plugins": [{"type": "bridge", "bridge": "cni1", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": "IPAM_DIR", "ranges": [[{"subnet": "10.99.0.0/24"}]]}}]}"#,
    );
    let (mut ours, mut base) = (Cri::connect(&w.spec.socket), Cri::connect(&plain.spec.socket));
    let (mut t_ours, mut t_base, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..50 {
        let (t, id) = time_to_ip(&mut ours, &format!("pod-{i}"));
        t_ours.push(t);
        ids.push((true, id));
        let (t, id) = time_to_ip(&mut base, &format!("pod-{i}"));
        t_base.push(t);
        ids.push((false, id));
    }
    for (mine, id) in ids {
        if mine {
            ours.remove_sandbox(&id)
        } else {
            base.remove_sandbox(&id)
        }
    }
    t_ours.sort_by(f64::total_cmp);
    t_base.sort_by(f64::total_cmp);
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (o, b) = (percentile(&t_ours, p), percentile(&t_base, p));
        println!(
            "| sandbox requested → IP in PodSandboxStatus, {label} over 50 pods | {o:.0} ms | {b:.0} ms (plain bridge + host-local, no overlay) | {:.2} | |",
            o / b
        );
    }
}

/// Whether `container` reaches `to_ip`'s probe server (UDP 7946): a few
/// tries, so a dropped probe fails fast.
fn reaches(cri: &mut Cri, container: &str, to_ip: &str) -> bool {
    let to = format!("{to_ip}:7946");
    cri.exec(container, &["/agent", "probe", "send", "--to", &to, "--tries", "4"]).0 == 0
}

/// A pod of the policy test: its worker (0 or 1), sandbox, container, address.
struct PolicyPod {
    id: String,
    sandbox: String,
    worker: usize,
    container: String,
    ip: String,
}

/// NetworkPolicy enforced by the agents on real containerd pods across two
/// workers: each pod's endpoint (labels from the runtime) is published in
/// etcd, and every probed cell matches the evaluator `imgbuild policy test`
/// uses, as policies are added, changed in place and deleted.
#[test]
fn network_policy_is_enforced_on_cri_pods_across_workers() {
    let _one = one_at_a_time();
    use imgbuild_policy::{store, Cluster, Protocol, Verdict};
    let (_lan, _etcd_ns, etcd, w1, w2) = two_workers_with(true);
    let workers = [&w1, &w2];
    let mut cris = [Cri::connect(&w1.spec.socket), Cri::connect(&w2.spec.socket)];
    let mut pods = Vec::new();
    for (worker, ns, name) in [(0, "x", "a"), (1, "x", "b"), (1, "y", "c")] {
        let cfg = pod_config(ns, name);
        let sandbox = workers[worker].run_sandbox(&mut cris[worker], &cfg);
        let container = cris[worker].start_container(&sandbox, &cfg, "probe", PROBE_IMAGE);
        let ip = cris[worker].sandbox_ip(&sandbox);
        pods.push(PolicyPod { id: format!("{ns}/{name}"), sandbox, worker, container, ip });
    }
    // Every endpoint is in etcd with its labels from the runtime.
    wait_until("three endpoints in etcd", 30, || etcd.keys(&format!("{}endpoints/", store::PREFIX)).len() == 3);
    let endpoints: Vec<store::Endpoint> = etcd
        .keys(&format!("{}endpoints/", store::PREFIX))
        .iter()
        .map(|k| store::stored_endpoint(k, etcd.get(k).unwrap().as_bytes()).unwrap())
        .collect();
    for e in &endpoints {
        assert_eq!(e.labels.get("app"), Some(&e.name), "{e:?}");
    }
    let pod_of =
        |p: &PolicyPod| endpoints.iter().find(|e| format!("{}/{}", e.namespace, e.name) == p.id).unwrap().pod();

    // The probed matrix against the evaluator's, for the policies in etcd.
    let check = |cris: &mut [Cri; 2], what: &str, policies: &[serde_json::Value]| {
        let policies: Vec<imgbuild_policy::NetworkPolicy> =
            policies.iter().map(|p| serde_json::from_value(p.clone()).unwrap()).collect();
        let cluster = Cluster::new(policies, &[], &Default::default());
        let want = |from: &PolicyPod, to: &PolicyPod| {
            cluster.verdict(&pod_of(from), &pod_of(to), 7946, Protocol::Udp) == Verdict::Allow
        };
        // Enforcement follows etcd's watch: wait until every cell agrees.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut wrong = Vec::new();
            for from in &pods {
                for to in pods.iter().filter(|t| t.id != from.id) {
                    let got = reaches(&mut cris[from.worker], &from.container, &to.ip);
                    if got != want(from, to) {
                        wrong.push(format!("{} -> {}: probed {got}, evaluator {}", from.id, to.id, want(from, to)));
                    }
                }
            }
            if wrong.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {wrong:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    check(&mut cris, "no policy", &[]);
    let key = store::policy_key("x", "isolate");
    let deny_all = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "isolate", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    });
    assert!(etcd.ctl(&["put", &key, &deny_all.to_string()]).0);
    check(&mut cris, "deny all ingress in x", std::slice::from_ref(&deny_all));
    assert!(!reaches(&mut cris[1], &pods[2].container, &pods[0].ip), "y/c -> x/a must be dropped");
    // Updated in place: from namespace y only, and to x/a only.
    let from_y = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "isolate", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}
    });
    assert!(etcd.ctl(&["put", &key, &from_y.to_string()]).0);
    check(&mut cris, "ingress to x/a from namespace y", std::slice::from_ref(&from_y));
    // Egress: x/b may send nowhere.
    let egress = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "quiet-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Egress"]}
    });
    assert!(etcd.ctl(&["put", &store::policy_key("x", "quiet-b"), &egress.to_string()]).0);
    check(&mut cris, "and no egress from x/b", &[from_y.clone(), egress]);
    assert!(etcd.ctl(&["del", "--prefix", &format!("{}networkpolicies/", store::PREFIX)]).0);
    check(&mut cris, "policies deleted", &[]);

    // A removed pod's endpoint leaves etcd and its node's table.
    let y_key = store::policy_key("y", "isolate");
    let isolate_y = deny_all.to_string().replace("\"x\"", "\"y\"");
    assert!(etcd.ctl(&["put", &y_key, &isolate_y]).0);
    let c_ip = format!("{} : jump", pods[2].ip);
    wait_until("y/c's chain in w2's table", 30, || w2.ns.sh("nft list table inet imgbuild-policy").contains(&c_ip));
    cris[1].remove_sandbox(&pods[2].sandbox);
    wait_until("y/c's endpoint to leave etcd", 30, || etcd.keys(&format!("{}endpoints/", store::PREFIX)).len() == 2);
    wait_until("y/c's address to leave w2's table", 30, || {
        !w2.ns.sh("nft list table inet imgbuild-policy").contains(&pods[2].ip)
    });
}
