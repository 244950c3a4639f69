//! The agent that the real Ignition installs from a worker config does the
//! whole network job with nothing but the files Ignition wrote: it runs
//! chrooted into the applied root, inside a test host namespace that has the
//! reference cluster's node IP, against a real etcd at the etcd node's IP.

mod common;
#[path = "../../node-agent/tests/common/mod.rs"]
mod hosts;

use std::path::Path;
use std::process::Command;

use common::{imgbuild_with_agent, run_ok, TEST_KERNEL};
use hosts::{node_config, start_agent, Agent, Etcd, Lan, Ns};

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

fn apply(config: &Path, root: &Path) {
    std::fs::create_dir_all(root.join("etc/selinux")).unwrap();
    std::fs::write(root.join("etc/selinux/config"), "SELINUX=disabled\nSELINUXTYPE=targeted\n").unwrap();
    for stage in ["fetch", "files"] {
        // The files stage ends with an SELinux relabel that needs the host's
        // setfiles; the files are all written before it.
        let _ = Command::new(IGNITION)
            .args(["-platform", "file", "-stage", stage, "-root"])
            .arg(root)
            .arg("-config-cache")
            .arg(root.with_extension("json"))
            .env("IGNITION_CONFIG_FILE", config)
            .output()
            .unwrap();
    }
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

#[test]
fn ignition_installed_agent_runs_the_node_from_its_config_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(imgbuild_with_agent().args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--out"]).arg(&out));
    let root = tmp.path().join("root");
    apply(&out.join("worker-1/worker-1.ign"), &root);
    // Flatcar ships the CNI plugins; this root gets Debian's.
    std::fs::create_dir_all(root.join("opt/cni/bin")).unwrap();
    for e in std::fs::read_dir("/usr/lib/cni").unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), root.join("opt/cni/bin").join(e.file_name())).unwrap();
    }

    // The reference cluster's addresses, inside namespaces of this test.
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let w1 = Ns::new("w1");
    lan.attach(&w1, "172.17.8.103/24");
    let agent =
        Agent::spawn(unshare(&w1, &in_root(&root, "/opt/bin/node-agent run --config /etc/node-agent/config.json")));
    agent.wait_for("node-agent: config from file /etc/node-agent/config.json", 30);
    let ready = agent.wait_for("node-agent: ready role=worker subnet=", 60);
    let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let key = format!("/coreos.com/network/subnets/{}", subnet.replace('/', "-"));
    let lease = etcd.get(&key).expect("lease in etcd");
    assert!(lease.starts_with(r#"{"PublicIP":"172.17.8.103","PublicIPv6":null,"BackendType":"vxlan""#), "{lease}");
    let env = std::fs::read_to_string(root.join("run/flannel/subnet.env")).unwrap();
    assert!(env.contains(&format!("FLANNEL_SUBNET={}", subnet.replace(".0/24", ".1/24"))), "{env}");
    assert!(root.join("etc/cni/net.d/10-imgbuild.conflist").is_file());

    // A second, ordinary test host, and a pod on each; kubelet's side runs
    // through the installed agent's conflist and /opt/cni/bin.
    let w2 = Ns::new("w2");
    lan.attach(&w2, "172.17.8.104/24");
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = node_config(dir2.path(), "w2", "worker", "172.17.8.104/24", &etcd.endpoint, "vxlan");
    let agent2 = start_agent(&w2, &cfg2);
    agent2.wait_for("ready role=worker", 60);

    let pod1 = Ns::new("p1");
    let add = format!("/opt/bin/node-agent pod add --name p1 --id {} --netns /var/run/netns/{}", pod1.name, pod1.name);
    let ip1 = String::from_utf8(run_ok(&mut unshare(&w1, &in_root(&root, &add))).stdout).unwrap().trim().to_owned();
    assert!(ip1.starts_with(subnet.trim_end_matches("0/24")), "{ip1} not in {subnet}");
    let pod2 = Ns::new("p2");
    let agent_bin = hosts::agent_bin();
    let add2 = format!(
        "{agent_bin} pod add --name p2 --id {} --netns {} --config {}",
        pod2.name,
        pod2.path().display(),
        cfg2.display()
    );
    let ip2 = w2.sh(&add2).trim().to_owned();
    let _serve = {
        let mut c = pod2.cmd(agent_bin);
        c.args(["probe", "serve"]);
        Agent::spawn(c)
    };
    let (ok, said) = pod1.try_sh(&format!("{agent_bin} probe send --to {ip2}:7946 --tries 40"));
    assert!(ok && said.contains(&format!("it saw {ip1} (we are {ip1})")), "{said}\n{}", agent.log());
}
