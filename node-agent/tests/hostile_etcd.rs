//! Hostile etcd values against a running agent, in network namespaces this
//! test creates: whoever holds a node certificate can write the network
//! config and any lease, and none of it may cut a node off or stop it.

mod common;

use common::*;

const NET_PREFIX: &str = "/coreos.com/network/subnets/";

fn lease_key(subnet: &str) -> String {
    format!("{NET_PREFIX}{}", subnet.replace('/', "-"))
}

fn vxlan_lease(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

struct Setup {
    _lan: Lan,
    _etcd_ns: Ns,
    etcd: Etcd,
    ns: Ns,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

/// etcd at 172.17.8.101 and a worker host at 172.17.8.103 on one LAN.
fn setup() -> Setup {
    let lan = Lan::new();
    let etcd_ns = Ns::new("hetcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let ns = Ns::new("hw1");
    lan.attach(&ns, "172.17.8.103/24");
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), "hw1", "worker", "172.17.8.103/24", &etcd.endpoint, "vxlan");
    Setup { _lan: lan, _etcd_ns: etcd_ns, etcd, ns, _dir: dir, config }
}

#[test]
fn a_network_config_over_the_node_network_is_refused_until_it_is_fixed() {
    let s = setup();
    let bad = r#"{"Network":"172.17.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
    assert!(s.etcd.ctl(&["put", "/coreos.com/network/config", bad]).0);
    let agent = start_agent(&s.ns, &s.config);
    agent.wait_for(
        "refusing etcd's network config: pod network 172.17.0.0/16 overlaps the node network 172.17.8.0/24",
        30,
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(s.etcd.keys(NET_PREFIX).is_empty(), "no lease is taken in a refused network");
    assert!(!agent.log().contains("node-agent: ready"), "{}", agent.log());
    let route = s.ns.sh("ip -4 route get 172.17.8.101");
    assert!(route.contains("dev eth0"), "the node still reaches etcd directly: {route}");

    let good = r#"{"Network":"10.1.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
    assert!(s.etcd.ctl(&["put", "/coreos.com/network/config", good]).0);
    agent.wait_for("node-agent: ready role=worker subnet=10.1.", 30);
}

#[test]
fn bad_leases_are_skipped_alone_and_stale_entries_go_on_restart() {
    let s = setup();
    let bad = [
        ("10.1.50.0/24", vxlan_lease("172.17.8.150", "ff:ff:ff:ff:ff:ff"), "VtepMAC ff:ff:ff:ff:ff:ff is not unicast"),
        ("10.1.51.0/24", vxlan_lease("172.17.8.151", "00:00:00:00:00:00"), "VtepMAC 00:00:00:00:00:00 is all zeros"),
        ("10.1.52.0/24", vxlan_lease("127.0.0.1", "52:54:00:00:00:52"), "PublicIP 127.0.0.1 is loopback"),
        ("10.1.53.0/24", vxlan_lease("0.0.0.0", "52:54:00:00:00:53"), "PublicIP 0.0.0.0 is"),
        ("10.1.54.0/24", vxlan_lease("224.0.0.1", "52:54:00:00:00:54"), "PublicIP 224.0.0.1 is multicast"),
    ];
    for (subnet, value, _) in &bad {
        assert!(s.etcd.ctl(&["put", &lease_key(subnet), value]).0);
    }
    let good = ("10.1.60.0/24", vxlan_lease("172.17.8.160", "52:54:00:00:00:60"));
    assert!(s.etcd.ctl(&["put", &lease_key(good.0), &good.1]).0);

    let mut agent = start_agent(&s.ns, &s.config);
    agent.wait_for("node-agent: ready role=worker", 60);
    for (subnet, _, why) in &bad {
        let line = agent.wait_for(&format!("skipping lease {subnet}: {why}"), 5);
        assert_eq!(agent.log().matches(&format!("skipping lease {subnet}:")).count(), 1, "once: {line}");
    }
    let routes = s.ns.sh("ip -4 route show dev flannel.1");
    assert!(routes.contains("10.1.60.0/24 via 10.1.60.0 onlink"), "{routes}");
    assert!(!routes.contains("10.1.5"), "no bad lease is routed: {routes}");
    assert!(s.ns.sh("bridge fdb show dev flannel.1").contains("52:54:00:00:00:60 dst 172.17.8.160"));

    // A lease deleted while the agent is down: its FDB entry, neighbour and
    // route go when the agent starts again.
    agent.kill();
    assert!(s.etcd.ctl(&["del", &lease_key(good.0)]).0);
    let agent = start_agent(&s.ns, &s.config);
    agent.wait_for("node-agent: ready role=worker", 60);
    let fdb = s.ns.sh("bridge fdb show dev flannel.1");
    assert!(!fdb.contains("52:54:00:00:00:60"), "{fdb}");
    let neigh = s.ns.sh("ip neigh show dev flannel.1");
    assert!(!neigh.contains("10.1.60.0"), "{neigh}");
    assert!(!s.ns.sh("ip -4 route show dev flannel.1").contains("10.1.60.0/24"));
}

#[test]
fn our_lease_overwritten_by_another_writer_is_taken_back() {
    let s = setup();
    let peer = ("10.1.60.0/24", vxlan_lease("172.17.8.160", "52:54:00:00:00:60"));
    assert!(s.etcd.ctl(&["put", &lease_key(peer.0), &peer.1]).0);
    let agent = start_agent(&s.ns, &s.config);
    let ready = agent.wait_for("node-agent: ready role=worker subnet=", 60);
    let subnet = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let ours = s.etcd.get(&lease_key(&subnet)).unwrap();
    // Another VTEP for our address, then another node's address altogether:
    // each time the agent writes its own value back and keeps its subnet.
    for (n, theirs) in
        [vxlan_lease("172.17.8.103", "52:54:00:66:66:66"), vxlan_lease("172.17.8.108", "52:54:00:66:66:67")]
            .iter()
            .enumerate()
    {
        let seen = agent.line_count();
        assert!(s.etcd.ctl(&["put", &lease_key(&subnet), theirs]).0);
        agent.wait_for_after(seen, &format!("our lease {subnet} was overwritten by another writer"), 30);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.etcd.get(&lease_key(&subnet)).as_deref() != Some(ours.as_str()) {
            assert!(std::time::Instant::now() < deadline, "case {n}: our lease value is back");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log = agent.log();
        assert!(!log.contains("acquired lease") || log.matches("acquired lease").count() == 1, "case {n}: {log}");
        let routes = s.ns.sh("ip -4 route show dev flannel.1");
        assert!(routes.contains("10.1.60.0/24 via 10.1.60.0 onlink"), "case {n}: the peer stays routed: {routes}");
        let addr = s.ns.sh("ip -4 -o addr show dev flannel.1");
        assert!(addr.contains(&format!("inet {}/32", subnet.trim_end_matches("/24"))), "case {n}: {addr}");
    }
}
