//! etcd with TLS and client certificates, as imgbuild plans it for the
//! reference cluster: the etcd node's agent runs etcd with its member
//! certificate, a worker's agent takes its lease with its client certificate,
//! and nobody without a certificate from the cluster CA gets in — not a
//! client without one, not a node of another cluster.

#[path = "../../node-agent/tests/common/mod.rs"]
mod hosts;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hosts::{start_agent, Lan, Ns};
use imgbuild::cluster::Cluster;
use imgbuild::pki::Pki;
use imgbuild::plan::{plan, Selection};
use node_config::NodeConfig;

/// Every node's config for the reference cluster under the CA in `pki_dir`.
fn configs(pki_dir: &Path) -> BTreeMap<String, NodeConfig> {
    let cluster = Cluster::embedded_default();
    let pki = Pki::load_or_create(pki_dir, &cluster.name).unwrap();
    let plans = plan(&cluster, &Selection { all: true, ..Default::default() }, Some(&pki)).unwrap();
    plans.into_iter().map(|p| (p.node.name.clone(), p.config)).collect()
}

/// Writes `cfg` with every path inside `dir`; etcd nodes run etcd themselves,
/// as in the image.
fn write(dir: &Path, mut cfg: NodeConfig) -> PathBuf {
    cfg.paths = hosts::paths_in(dir);
    if let Some(m) = cfg.etcd.member.as_mut() {
        m.supervise = true;
    }
    let path = dir.join("config.json");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    path
}

/// etcdctl inside `ns` against the etcd node, with the given TLS files.
fn etcdctl(ns: &Ns, tls: &str, args: &str) -> (bool, String) {
    ns.try_sh(&format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://172.17.8.101:2379 --dial-timeout=3s --command-timeout=5s {tls} {args}"
    ))
}

/// With authentication on, a worker's certificate (CN worker-1) reads the
/// network config and the policies and writes its leases and its own
/// policy endpoints, nothing else; the administrator's writes anything; and
/// etcd's JSON gateway, which ignores a certificate's CN, serves nobody.
fn least_privilege(pki_dir: &Path, w1: &Ns, mine: &str, subnet: &str) {
    let denied = |args: &str| {
        let (ok, out) = etcdctl(w1, mine, args);
        assert!(!ok && out.contains("permission denied"), "worker-1 may {args}: {out}");
    };
    let allowed = |tls: &str, args: &str| {
        let (ok, out) = etcdctl(w1, tls, args);
        assert!(ok, "refused {args}: {out}");
        out
    };
    assert!(allowed(mine, "get --print-value-only /coreos.com/network/config").contains("Network"));
    denied("put /coreos.com/network/config {}");
    denied("del /coreos.com/network/config");
    denied("put /imgbuild/policy/v1/networkpolicies/default/allow-all {}");
    denied("del --prefix /imgbuild/policy/v1/");
    denied("put /imgbuild/policy/v1/endpoints/worker-2/forged {}");
    denied("del --prefix /imgbuild/");
    denied("get --prefix /");
    denied("user list");
    allowed(mine, "put /imgbuild/policy/v1/endpoints/worker-1/own {}");
    allowed(mine, "get --prefix /imgbuild/policy/v1/");
    allowed(mine, &format!("get /coreos.com/network/subnets/{subnet}"));

    let pki = Pki::load(pki_dir).unwrap();
    let admin = pki.issue_admin();
    let dir = pki_dir.parent().unwrap().join("admin");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [("ca.crt", pki.trust()), ("client.crt", &admin.cert), ("client.key", &admin.key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let d = dir.display();
    let admin_tls = format!("--cacert={d}/ca.crt --cert={d}/client.crt --key={d}/client.key");
    allowed(&admin_tls, "put /imgbuild/admin-was-here yes");
    let users = allowed(&admin_tls, "user list");
    for u in ["root", "etcd-1", "imgbuild:admin", "master-1", "worker-1", "worker-2"] {
        assert!(users.lines().any(|l| l.trim() == u), "no etcd user {u}: {users}");
    }
    allowed(&admin_tls, "del /imgbuild/admin-was-here");

    // The gateway: the same worker certificate, and the admin's, get nothing.
    let mine_dir = pki_dir.parent().and_then(Path::parent).unwrap().join("mine");
    for (who, tls) in [("worker-1", mine_dir.display().to_string()), ("admin", d.to_string())] {
        let (_, out) = w1.try_sh(&format!(
            "curl -sS --max-time 5 --cacert {tls}/ca.crt --cert {tls}/client.crt --key {tls}/client.key \\
             -X POST https://172.17.8.101:2379/v3/kv/range -d '{{\"key\":\"L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc=\"}}'"
        ));
        assert!(!out.contains("\"kvs\"") && out.contains("will be ignored"), "the gateway served {who}: {out}");
    }
}

/// Writes a node's client CA, certificate and key for etcdctl.
fn client_files(dir: &Path, cfg: &NodeConfig) -> String {
    let tls = cfg.etcd.tls.as_ref().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in [("ca.crt", &tls.ca), ("client.crt", &tls.cert), ("client.key", &tls.key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let d = dir.display();
    format!("--cacert={d}/ca.crt --cert={d}/client.crt --key={d}/client.key")
}

#[test]
fn only_holders_of_the_cluster_ca_certificates_reach_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = configs(&tmp.path().join("pki/ours"));
    let theirs = configs(&tmp.path().join("pki/theirs"));

    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd_dir = tmp.path().join("etcd-1");
    let etcd = start_agent(&etcd_ns, &write(&etcd_dir, ours["etcd-1"].clone()));
    etcd.wait_for("ready role=etcd", 60);
    // The member's key sits where only root reads it.
    let tls_dir = etcd_dir.join("var/lib/node-agent/etcd-tls");
    assert_eq!(std::fs::metadata(&tls_dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(tls_dir.join("etcd.key")).unwrap().permissions().mode() & 0o777, 0o600);

    let w1 = Ns::new("w1");
    lan.attach(&w1, "172.17.8.103/24");
    let worker = start_agent(&w1, &write(&tmp.path().join("worker-1"), ours["worker-1"].clone()));
    let ready = worker.wait_for("ready role=worker subnet=", 60);
    let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().replace('/', "-");

    // A worker's own certificate reads its lease; etcd speaks only TLS.
    let mine = client_files(&tmp.path().join("mine"), &ours["worker-1"]);
    let (ok, out) = etcdctl(&w1, &mine, &format!("get --print-value-only /coreos.com/network/subnets/{subnet}"));
    assert!(ok && out.contains(r#""PublicIP":"172.17.8.103""#), "{out}");
    let (ok, out) = w1.try_sh(
        "ETCDCTL_API=3 etcdctl --endpoints=http://172.17.8.101:2379 --dial-timeout=3s --command-timeout=5s get /x",
    );
    assert!(!ok, "plain HTTP answered: {out}");

    least_privilege(&tmp.path().join("pki/ours"), &w1, &mine, &subnet);
    assert!(etcd.log().contains("etcd authentication on: 3 node users"), "{}", etcd.log());
    assert!(etcd.log().contains("etcd 3.4.23 has known ways past its authorization"), "{}", etcd.log());
    // The peer port takes members' certificates only: raft from a node's
    // client certificate would write past etcd's authentication.
    let member = ours["etcd-1"].etcd.member.as_ref().unwrap().tls.clone().unwrap();
    let peer_dir = tmp.path().join("peer");
    std::fs::create_dir_all(&peer_dir).unwrap();
    std::fs::write(peer_dir.join("m.crt"), &member.cert).unwrap();
    std::fs::write(peer_dir.join("m.key"), &member.key).unwrap();
    let (mine_dir, p) = (tmp.path().join("mine"), peer_dir.display());
    let m = mine_dir.display();
    // From the member's own address: etcd also checks a peer certificate's
    // addresses against the connection's, and the member's names its own.
    let peer = |cert: &str, key: &str| {
        etcd_ns.try_sh(&format!(
            "curl -sS --http1.1 --max-time 5 --cacert {m}/ca.crt --cert {cert} --key {key} https://172.17.8.101:2380/members"
        ))
    };
    let (ok, out) = peer(&format!("{m}/client.crt"), &format!("{m}/client.key"));
    assert!(!ok && !out.contains("etcd-1"), "the peer port took worker-1's certificate: {out}");
    let (ok, out) = peer(&format!("{p}/m.crt"), &format!("{p}/m.key"));
    assert!(ok && out.contains("etcd-1"), "the peer port refused a member: {out}");

    // No client certificate, or one from another cluster's CA: refused.
    let ca_only = format!("--cacert={}/ca.crt", tmp.path().join("mine").display());
    let (ok, out) = etcdctl(&w1, &ca_only, "get /coreos.com/network/config");
    assert!(!ok, "no client certificate, yet etcd answered: {out}");
    let mut foreign = ours["worker-1"].clone();
    foreign.etcd.tls.as_mut().unwrap().cert = theirs["worker-1"].etcd.tls.as_ref().unwrap().cert.clone();
    foreign.etcd.tls.as_mut().unwrap().key = theirs["worker-1"].etcd.tls.as_ref().unwrap().key.clone();
    let foreign_files = client_files(&tmp.path().join("foreign"), &foreign);
    let (ok, out) = etcdctl(&w1, &foreign_files, "get /coreos.com/network/config");
    assert!(!ok, "another cluster's certificate, yet etcd answered: {out}");

    // A node of another cluster, at a free address of this one: its agent
    // neither trusts this etcd nor is trusted by it, and never gets ready.
    let w2 = Ns::new("w2");
    lan.attach(&w2, "172.17.8.104/24");
    let stranger = start_agent(&w2, &write(&tmp.path().join("worker-2"), theirs["worker-2"].clone()));
    let said = stranger.wait_for("certificate", 30);
    assert!(said.contains("etcd") && said.contains("UnknownIssuer"), "{said}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!stranger.log().contains("ready"), "{}", stranger.log());
    assert!(etcd.log().contains("ready role=etcd"));
}

/// Makes a pod on host `ns` as kubelet would (the CNI plugins of the
/// agent's conflist); returns its namespace and address.
fn pod_add(ns: &Ns, config: &Path, name: &str) -> (Ns, String) {
    let pod = Ns::new(name);
    let out = hosts::run(
        ns.cmd(hosts::agent_bin())
            .args(["pod", "add", "--name", name, "--id", &pod.name, "--netns"])
            .arg(pod.path())
            .arg("--config")
            .arg(config),
    );
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (pod, ip)
}

/// Pings `to` from `from` every 10 ms, `count` times.
fn pinger(from: &Ns, to: &str, count: u32) -> hosts::Agent {
    let mut c = from.cmd("ping");
    c.args(["-n", "-i", "0.01", "-W", "1", "-c", &count.to_string(), to]);
    let p = hosts::Agent::spawn(c);
    p.wait_for("bytes from", 10);
    p
}

/// How many of `count` pings got no answer.
fn lost(mut ping: hosts::Agent, count: u32) -> u32 {
    assert!(ping.wait_exit(60).is_some(), "ping did not finish");
    let log = ping.log();
    let line = log.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("{log}"));
    let received: u32 = line.split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    count - received
}

/// Every node with pods rebuilt, one at a time, by a newer build (`pki
/// rotate`: new keys and certificates from the same CA) and rebooted as
/// a disk-less image node is: the agent gone, its VXLAN device and routes
/// gone, its state folder empty. Each comes back with its subnet (its lease
/// is still in etcd) and its VTEP MAC (derived from what it is, so the
/// peers' FDB entries stay right), under etcd's authentication, and pod
/// traffic between the other nodes never stops. A ping every 10 ms measures
/// it, and the rebuilt node's own outage.
#[test]
fn a_rolling_rebuild_keeps_subnets_macs_and_the_other_nodes_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    let before = configs(&pki_dir);
    let lan = Lan::new();
    let etcd_ns = Ns::new("retcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = start_agent(&etcd_ns, &write(&tmp.path().join("etcd-1"), before["etcd-1"].clone()));
    etcd.wait_for("ready role=etcd", 60);

    let names = ["master-1", "worker-1", "worker-2"];
    let without_policy = |mut cfg: NodeConfig| {
        // Pods here are made by CNI alone, with no runtime to name them for policy.
        cfg.policy = None;
        cfg
    };
    let mut hosts_ = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let ns = Ns::new(&format!("r{i}"));
        lan.attach(&ns, &format!("172.17.8.{}/24", 102 + i));
        let dir = tmp.path().join(name);
        let config = write(&dir, without_policy(before[*name].clone()));
        let agent = start_agent(&ns, &config);
        let ready = agent.wait_for("ready role=", 60);
        let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        let mac = ns.sh("cat /sys/class/net/flannel.1/address").trim().to_owned();
        let (pod, ip) = pod_add(&ns, &config, &format!("rp{i}"));
        hosts_.push((ns, dir, config, agent, subnet, mac, pod, ip));
    }

    let cluster = Cluster::embedded_default();
    imgbuild::pki::rotate(&pki_dir, &cluster.name, false).unwrap();
    let after = configs(&pki_dir);
    let count = 1000;
    let mut report = Vec::new();
    for i in 0..names.len() {
        let new = without_policy(after[names[i]].clone());
        assert_ne!(new.etcd.tls, before[names[i]].etcd.tls, "a rebuild after rotate brings a new certificate");
        let (a, b) = ((i + 1) % 3, (i + 2) % 3);
        let between_others = pinger(&hosts_[a].6, &hosts_[b].7, count);
        let to_rebuilt = pinger(&hosts_[a].6, &hosts_[i].7, count);
        std::thread::sleep(std::time::Duration::from_secs(1));

        let (ns, dir, config, agent, subnet, mac, _, _) = &mut hosts_[i];
        agent.kill();
        ns.sh("ip link del flannel.1");
        for d in ["var/lib/node-agent", "run/flannel"] {
            std::fs::remove_dir_all(dir.join(d)).unwrap();
        }
        *config = write(dir, new);
        *agent = start_agent(ns, config);
        let ready = agent.wait_for("ready role=", 60);
        assert!(
            ready.contains(&format!("subnet={subnet} ")) || ready.ends_with(&format!("subnet={subnet}")),
            "{ready}, was {subnet}\n{}",
            agent.log()
        );
        assert_eq!(&ns.sh("cat /sys/class/net/flannel.1/address").trim(), mac, "the VTEP MAC changed");

        let (others, outage) = (lost(between_others, count), lost(to_rebuilt, count));
        report.push(format!(
            "{}: between the others {others} of {count} lost, to it {outage} ({} ms)",
            names[i],
            outage * 10
        ));
        assert_eq!(others, 0, "traffic between the other nodes stopped while {} was rebuilt", names[i]);
        assert!(outage < count / 2, "{} was out for {} ms", names[i], outage * 10);
        // And it serves its pod again.
        let (ok, out) = hosts_[a].6.try_sh(&format!("ping -n -c 3 -W 1 {}", hosts_[i].7));
        assert!(ok, "{out}");
    }
    eprintln!("rolling rebuild, pings every 10 ms:\n{}", report.join("\n"));
    assert!(etcd.log().contains("etcd authentication on"), "{}", etcd.log());
}
