//! A Flatcar worker's pods through Flatcar's own containerd: real Ignition
//! applies the worker's config to a root; then, in a network namespace with
//! the cluster's etcd (TLS), the agent that root holds runs from the config
//! it holds, and containerd runs as the root's drop-in starts it, from the
//! root's config, with the root's CNI plugins. A sandbox asked for over CRI,
//! as kubelet would with `--container-runtime-endpoint`, fails with a clear
//! error before the agent has a lease (the conflist an earlier boot left is
//! gone), then gets an address from the worker's lease.

mod common;
#[path = "../../node-agent/tests/common/mod.rs"]
mod hosts;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{apply_ignition, assert_ignition_applied, imgbuild_with_agent, run_ok};
use hosts::{Agent, Ns};
use testkit::cri::{pod_config, Cri};

/// The node's etcd (etcd-1's member certificate) on 172.17.8.101 in `ns`.
fn start_etcd(ns: &Ns, dir: &Path, pki: &Path) -> Agent {
    let ca = imgbuild::pki::Pki::load_or_create(pki, "imgbuild").unwrap();
    let cluster = imgbuild::cluster::Cluster::embedded_default();
    let member = ca.issue(cluster.node("etcd-1").unwrap(), true).member.unwrap();
    for (f, text) in [("ca.crt", ca.ca_cert()), ("etcd.crt", &member.cert), ("etcd.key", &member.key)] {
        std::fs::write(dir.join(f), text).unwrap();
    }
    let d = dir.display();
    let mut cmd = ns.cmd("etcd");
    cmd.args([
        "--name=etcd-1",
        &format!("--data-dir={d}/data"),
        "--listen-client-urls=https://172.17.8.101:2379",
        "--advertise-client-urls=https://172.17.8.101:2379",
        "--listen-peer-urls=http://172.17.8.101:2380",
        "--initial-advertise-peer-urls=http://172.17.8.101:2380",
        "--initial-cluster=etcd-1=http://172.17.8.101:2380",
        &format!("--cert-file={d}/etcd.crt"),
        &format!("--key-file={d}/etcd.key"),
        &format!("--trusted-ca-file={d}/ca.crt"),
        "--client-cert-auth",
        "--enable-v2=false",
    ]);
    let etcd = Agent::spawn(cmd);
    etcd.wait_for("ready to serve client requests", 30);
    etcd
}

/// What the node's root holds for containerd: its config (our CNI folders,
/// systemd cgroups as Flatcar's kubelet expects) and the drop-in that
/// makes Flatcar's unit run containerd with it.
fn check_runtime_files(root: &Path) -> (String, String) {
    let config = std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
    for want in [
        "bin_dir = \"/opt/cni/bin\"",
        "conf_dir = \"/etc/cni/net.d\"",
        "SystemdCgroup = true",
        "address = \"/run/containerd/containerd.sock\"",
    ] {
        assert!(config.contains(want), "{want} missing:\n{config}");
    }
    let dropin =
        std::fs::read_to_string(root.join("etc/systemd/system/containerd.service.d/10-imgbuild.conf")).unwrap();
    assert!(
        dropin.contains("\nExecStart=\nExecStart=/usr/bin/containerd --config /etc/containerd/config.toml\n"),
        "{dropin}"
    );
    let preset = std::fs::read_to_string(root.join("etc/systemd/system-preset/20-ignition.preset")).unwrap();
    assert!(preset.lines().any(|l| l == "enable containerd.service"), "{preset}");
    // The plugins our conflist and containerd name, installed and runnable,
    // speaking the conflist's CNI version.
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let bin = root.join("opt/cni/bin").join(plugin);
        let out = run_ok(Command::new(&bin).env("CNI_COMMAND", "VERSION").stdin(Stdio::null()));
        let versions = String::from_utf8_lossy(&out.stdout);
        assert!(versions.contains("\"1.0.0\""), "{plugin}: {versions}");
    }
    let pre = dropin.lines().find_map(|l| l.strip_prefix("ExecStartPre=")).expect("an ExecStartPre").to_owned();
    (config, pre)
}

/// The agent and containerd of the applied root, in a mount namespace of
/// their own inside `ns`: the root's /etc/cni, /etc/containerd and /opt in
/// place, fresh /run and /var/lib, as after a reboot. containerd starts as
/// the root's drop-in starts it (`pre`, then containerd reading `config`);
/// the agent only once the file `go` exists, so the test can ask for a
/// sandbox before there is a lease.
fn start_node(ns: &Ns, root: &Path, pre: &str, config: &Path, logs: &Path) -> Agent {
    let r = root.display();
    std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
    let script = format!(
        "set -e
         mount --make-rprivate /
         mount -t tmpfs tmpfs /run
         mount -t tmpfs tmpfs /var/lib
         mount --bind {r}/etc/cni /etc/cni
         mount --bind {r}/etc/containerd /etc/containerd
         mount --bind {r}/opt /opt
         {pre}
         /usr/bin/containerd --config {c} >{l}/containerd.log 2>&1 &
         echo containerd-pid $!
         until [ -e {l}/go ]; do sleep 0.2; done
         {r}/opt/bin/node-agent run --config {r}/etc/node-agent/config.json >{l}/agent.log 2>&1 &
         wait",
        l = logs.display(),
        c = config.display()
    );
    // Into the network namespace alone: `ip netns exec` would hide the
    // host's cgroup mounts, which runc needs, under a fresh sysfs.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display())).args(["unshare", "-m", "sh", "-c", &script]);
    Agent::spawn(cmd)
}

/// Every process in the mount namespace of `pid` (the node's), and the
/// containers its shims started, ended.
fn end_node(pid: u32, node: &mut Agent) {
    hosts::delete_runc_containers(Path::new(&format!("/proc/{pid}/root/run/containerd/runc/k8s.io")));
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let same = ns.is_some() && std::fs::read_link(p.path().join("ns/mnt")).ok() == ns;
        if let (true, Ok(n)) = (same, p.file_name().to_string_lossy().parse::<i32>()) {
            let _ = Command::new("kill").args(["-9", &n.to_string()]).status();
        }
    }
    node.kill();
}

#[test]
fn flatcars_containerd_runs_our_conflist_from_the_applied_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, root, pki) = (tmp.path().join("out"), tmp.path().join("root"), tmp.path().join("pki"));
    run_ok(
        imgbuild_with_agent()
            .args(["--node", "worker-1", "--only", "ignition", "--pki"])
            .arg(&pki)
            .arg("--out")
            .arg(&out),
    );
    let (_, log) = apply_ignition(&out.join("worker-1/worker-1.ign"), &root);
    assert_ignition_applied(&log);
    let (config, pre) = check_runtime_files(&root);
    // As after a reboot: the conflist an earlier boot left, naming a subnet
    // this boot's lease will not be.
    let stale = root.join("etc/cni/net.d/10-imgbuild.conflist");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(
        &stale,
        r#"{"cniVersion": "1.0.0", "name": "imgbuild", "plugins": [{"type": "bridge", "bridge": "cni0",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.250.0/24"}]]}}]}"#,
    )
    .unwrap();

    // Two changes for this machine, everything else as the root has it: it
    // runs no systemd for runc to ask for cgroups, so runc writes them
    // itself; and its root lacks CAP_SYS_RESOURCE, so sandboxes keep
    // containerd's own OOM score instead of -998.
    let local = tmp.path().join("containerd-this-machine.toml");
    let changed = config
        .replace("SystemdCgroup = true", "SystemdCgroup = false")
        .replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true");
    assert_eq!(changed.lines().zip(config.lines()).filter(|(a, b)| a != b).count(), 2, "{config}");
    std::fs::write(&local, changed).unwrap();

    let ns = Ns::new("flatcar");
    // The node's NIC: one end of a veth pair (this kernel has no dummy links).
    ns.sh("ip link add eth0 type veth peer name eth1 && ip link set eth1 up && ip link set eth0 up");
    ns.sh("ip addr add 172.17.8.103/24 dev eth0 && ip addr add 172.17.8.101/24 dev eth0");
    let etcd_dir = tmp.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).unwrap();
    let _etcd = start_etcd(&ns, &etcd_dir, &pki);
    let mut node = start_node(&ns, &root, &pre, &local, tmp.path());
    let pid: u32 =
        node.wait_for("containerd-pid ", 90).split_whitespace().last().unwrap().parse().expect("containerd's pid");
    let socket = PathBuf::from(format!("/proc/{pid}/root/run/containerd/containerd.sock"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let log = std::fs::read_to_string(tmp.path().join("containerd.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "containerd did not open its socket:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut cri = Cri::connect(&socket);

    // Flatcar's sandbox image comes from a registry, which this test may
    // not reach: the pause image imgbuild builds stands in, imported as
    // kubelet's image service would pull it, under the name the config uses.
    let pause = node_agent_pause(tmp.path());
    let sandbox_image = config_sandbox_image(&status_config(&mut cri));
    let ctr = || {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&socket).args(["--namespace", "k8s.io"]);
        c
    };
    run_ok(ctr().args(["images", "import"]).arg(&pause.0));
    run_ok(ctr().args(["images", "tag", &pause.1, &sandbox_image]));

    // No lease yet: the stale conflist is gone, and a sandbox fails with
    // the CRI's own error instead of taking an address from 10.1.250.0/24
    // (kubelet retries it; the node reports NetworkReady false meanwhile).
    assert!(!stale.exists(), "the drop-in's ExecStartPre left the earlier boot's conflist");
    let early = cri.run_sandbox(&pod_config("default", "too-early"));
    let message = early.as_ref().map_err(|e| e.message().to_owned()).err().unwrap_or_default();
    // containerd 1.6 says "cni plugin not initialized" (later ones "cni config uninitialized").
    assert!(
        message.contains("cni plugin not initialized") || message.contains("cni config uninitialized"),
        "{early:?}"
    );

    std::fs::write(tmp.path().join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cri.status();
        let ready = status.status.iter().flat_map(|s| &s.conditions).any(|c| c.r#type == "NetworkReady" && c.status);
        if ready {
            // Our conflist is the network it loaded.
            let cni = status.info.get("cniconfig").cloned().unwrap_or_default();
            assert!(cni.contains("10-imgbuild.conflist") || cni.contains("\"imgbuild\""), "{cni}");
            break;
        }
        assert!(Instant::now() < deadline, "CRI network never ready: {status:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let agent_log = std::fs::read_to_string(tmp.path().join("agent.log")).unwrap();
    let subnet: ipnet::Ipv4Net = agent_log
        .lines()
        .find_map(|l| l.split("ready role=worker subnet=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ready line:\n{agent_log}"))
        .parse()
        .unwrap();

    let sandbox = cri.run_sandbox(&pod_config("default", "flatcar-pod"));
    let sandbox = match sandbox {
        Ok(id) => id,
        Err(e) => {
            let log = std::fs::read_to_string(tmp.path().join("containerd.log")).unwrap_or_default();
            end_node(pid, &mut node);
            panic!("RunPodSandbox: {e}\n{log}");
        }
    };
    let ip: std::net::Ipv4Addr = cri.sandbox_ip(&sandbox).parse().unwrap();
    let ok = subnet.contains(&ip);
    cri.remove_sandbox(&sandbox);
    end_node(pid, &mut node);
    assert!(ok, "pod IP {ip} is not in the worker's lease {subnet}");
}

/// The sandbox image containerd's CRI config names (its default when the
/// config names none).
fn status_config(cri: &mut Cri) -> String {
    cri.status().info.get("config").cloned().unwrap_or_default()
}

fn config_sandbox_image(config_json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(config_json).expect("CRI config is JSON");
    v["sandboxImage"].as_str().expect("sandboxImage in CRI config").to_owned()
}

/// The pause image imgbuild's agent makes, as a layout tar in `dir`, and its name.
fn node_agent_pause(dir: &Path) -> (PathBuf, String) {
    let agent = std::fs::read(common::agent_path()).unwrap();
    let image = node_agent::runtime::oci::pause_image(&agent);
    let tar = dir.join("pause.tar");
    std::fs::write(&tar, image.layout_tar().unwrap()).unwrap();
    (tar, image.name)
}
