//! The agents that the real Ignition installs from the reference cluster's
//! configs do the whole network job with nothing but the files Ignition
//! wrote: each runs chrooted into its applied root, inside a test host
//! namespace with its node IP, and etcd runs from the etcd node's drop-in
//! with the TLS files Ignition wrote, as Flatcar's etcd-member would.

mod common;
#[path = "../../node-agent/tests/common/mod.rs"]
mod hosts;

use std::path::Path;
use std::process::Command;

use common::{apply_ignition, assert_ignition_applied, imgbuild_with_agent, run_ok, TEST_KERNEL};
use hosts::{Agent, Lan, Ns};

fn apply(config: &Path, root: &Path) {
    let (_, log) = apply_ignition(config, root);
    assert_ignition_applied(&log);
    assert!(root.join("opt/bin/node-agent").is_file(), "Ignition did not install the agent");
}

/// A shell line that runs `cmd` chrooted into `root` in a private mount
/// namespace, with the host's /usr and /etc/alternatives (Debian's iptables,
/// as Flatcar has its own) and /dev, fresh /proc and /sys of the current
/// network namespace, and the host's netns directory.
fn in_root(root: &Path, cmd: &str) -> String {
    let r = root.display();
    format!(
        "set -e; mkdir -p {r}/usr {r}/proc {r}/sys {r}/dev {r}/run {r}/tmp {r}/var/run/netns {r}/etc/alternatives; \
         for d in bin sbin lib lib64; do ln -sfn usr/$d {r}/$d; done; \
         mount --bind /usr {r}/usr; mount --bind /dev {r}/dev; mount --rbind /run/netns {r}/var/run/netns; \
         mount --bind /etc/alternatives {r}/etc/alternatives; \
         mount -t proc proc {r}/proc; mount -t sysfs sysfs {r}/sys; \
         exec chroot {r} {cmd}"
    )
}

fn unshare(ns: &Ns, line: &str) -> Command {
    let mut c = ns.cmd("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", line]);
    c
}

/// etcd as Flatcar's etcd-member.service runs it, from the applied etcd
/// node's drop-in: its `ETCD_*` environment, `$ETCD_SSL_DIR` mounted at
/// `/etc/ssl/certs` as etcd-wrapper mounts it into etcd's container.
fn etcd_member_line(root: &Path) -> String {
    let dropin =
        std::fs::read_to_string(root.join("etc/systemd/system/etcd-member.service.d/20-imgbuild.conf")).unwrap();
    let env: Vec<String> = dropin
        .lines()
        .filter_map(|l| l.strip_prefix("Environment=\"")?.strip_suffix('"').map(|kv| format!("'{kv}'")))
        .collect();
    let ssl_dir = env.iter().find_map(|kv| kv.strip_prefix("'ETCD_SSL_DIR=")?.strip_suffix('\'')).unwrap().to_owned();
    let r = root.display();
    format!(
        "mkdir -p {r}/etc/ssl/certs {r}/var/lib/etcd; mount --bind {r}{ssl_dir} {r}/etc/ssl/certs; {}",
        in_root(root, &format!("env {} /usr/bin/etcd", env.join(" ")))
    )
}

/// Builds `node` of the reference cluster under the CA in `pki` and applies
/// its Ignition config to a fresh root.
fn installed(tmp: &Path, pki: &Path, node: &str) -> std::path::PathBuf {
    let out = tmp.join("out");
    let args = ["--node", node, "--kernel", TEST_KERNEL, "--pki"];
    run_ok(imgbuild_with_agent().args(args).arg(pki).arg("--out").arg(&out));
    let root = tmp.join(format!("root-{node}"));
    apply(&out.join(node).join(format!("{node}.ign")), &root);
    if node.starts_with("worker") {
        // Flatcar ships the CNI plugins; this root gets Debian's.
        std::fs::create_dir_all(root.join("opt/cni/bin")).unwrap();
        for e in std::fs::read_dir("/usr/lib/cni").unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), root.join("opt/cni/bin").join(e.file_name())).unwrap();
        }
    }
    root
}

/// Starts the installed agent of `root` inside `ns`.
fn start_installed(ns: &Ns, root: &Path) -> Agent {
    Agent::spawn(unshare(ns, &in_root(root, "/opt/bin/node-agent run --config /etc/node-agent/config.json")))
}

/// A pod in `pod` through the installed agent's conflist and /opt/cni/bin,
/// as kubelet would add it; returns its IP.
fn add_pod(host: &Ns, root: &Path, pod: &Ns, name: &str) -> String {
    let add =
        format!("/opt/bin/node-agent pod add --name {name} --id {} --netns /var/run/netns/{}", pod.name, pod.name);
    String::from_utf8(run_ok(&mut unshare(host, &in_root(root, &add))).stdout).unwrap().trim().to_owned()
}

#[test]
fn ignition_installed_agent_runs_the_node_from_its_config_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let etcd_root = installed(tmp.path(), &pki, "etcd-1");
    let root = installed(tmp.path(), &pki, "worker-1");
    let root2 = installed(tmp.path(), &pki, "worker-2");

    // The reference cluster's addresses, inside namespaces of this test.
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Agent::spawn(unshare(&etcd_ns, &etcd_member_line(&etcd_root)));
    // etcd's agent waits for it, then puts the network config.
    let etcd_agent = start_installed(&etcd_ns, &etcd_root);
    etcd_agent.wait_for("ready role=etcd", 60);
    assert!(etcd.log().contains("ClientTLS: cert = /etc/ssl/certs/etcd.crt"), "{}", etcd.log());

    let w1 = Ns::new("w1");
    lan.attach(&w1, "172.17.8.103/24");
    let agent = start_installed(&w1, &root);
    agent.wait_for("node-agent: config from file /etc/node-agent/config.json", 30);
    let ready = agent.wait_for("node-agent: ready role=worker subnet=", 60);
    let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let env = std::fs::read_to_string(root.join("run/flannel/subnet.env")).unwrap();
    assert!(env.contains(&format!("FLANNEL_SUBNET={}", subnet.replace(".0/24", ".1/24"))), "{env}");
    assert!(root.join("etc/cni/net.d/10-imgbuild.conflist").is_file());

    let w2 = Ns::new("w2");
    lan.attach(&w2, "172.17.8.104/24");
    let agent2 = start_installed(&w2, &root2);
    agent2.wait_for("ready role=worker", 60);

    // A pod on each worker; kubelet's side runs through each installed agent.
    let pod1 = Ns::new("p1");
    let ip1 = add_pod(&w1, &root, &pod1, "p1");
    assert!(ip1.starts_with(subnet.trim_end_matches("0/24")), "{ip1} not in {subnet}");
    let pod2 = Ns::new("p2");
    let ip2 = add_pod(&w2, &root2, &pod2, "p2");
    let agent_bin = hosts::agent_bin();
    let _serve = {
        let mut c = pod2.cmd(agent_bin);
        c.args(["probe", "serve"]);
        Agent::spawn(c)
    };
    let (ok, said) = pod1.try_sh(&format!("{agent_bin} probe send --to {ip2}:7946 --tries 40"));
    assert!(ok && said.contains(&format!("it saw {ip1} (we are {ip1})")), "{said}\n{}", agent.log());
}
