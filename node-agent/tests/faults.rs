//! Faults against the real agent and a real etcd, in namespaces this test
//! makes: a peer's lease expiring, and etcd killed and restarted while the
//! agent watches.

mod common;

use std::time::{Duration, Instant};

use common::*;

const NET_PREFIX: &str = "/coreos.com/network/subnets/";

/// A peer lease as flanneld writes it; on an etcd lease of `ttl` seconds if given.
fn put_peer(etcd: &Etcd, subnet: &str, public_ip: &str, mac: &str, ttl: Option<u32>) {
    let key = format!("{NET_PREFIX}{}", subnet.replace('/', "-"));
    let value = format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    );
    let mut args = vec!["put".to_owned(), key, value];
    if let Some(ttl) = ttl {
        let (ok, out) = etcd.ctl(&["lease", "grant", &ttl.to_string()]);
        assert!(ok, "{out}");
        let id = out.split_whitespace().nth(1).unwrap().to_owned();
        args.push(format!("--lease={id}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = etcd.ctl(&args);
    assert!(ok, "{out}");
}

/// What the kernel holds for a peer: (route, neighbour, FDB entry).
fn programmed(ns: &Ns, subnet: &str, mac: &str) -> (bool, bool, bool) {
    let gw = subnet.trim_end_matches("/24");
    let route = ns.sh(&format!("ip route show {subnet}"));
    let neigh = ns.sh("ip neigh show dev flannel.1");
    let fdb = ns.sh("bridge fdb show dev flannel.1");
    (
        route.contains(&format!("via {gw} dev flannel.1 onlink")),
        neigh.contains(&format!("{gw} lladdr {mac}")),
        fdb.contains(mac),
    )
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An etcd host and a ready worker `w1` on one LAN (fields drop in order:
/// the agent first, the LAN last).
struct World {
    agent: Agent,
    _dir: tempfile::TempDir,
    ns: Ns,
    etcd: Etcd,
    _etcd_ns: Ns,
    _lan: Lan,
    /// The agent's own subnet.
    own: String,
}

fn world() -> World {
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let ns = Ns::new("w1");
    lan.attach(&ns, "172.17.8.103/24");
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), "w1", "worker", "172.17.8.103/24", &etcd.endpoint, "vxlan");
    let agent = start_agent(&ns, &config);
    let ready = agent.wait_for("node-agent: ready role=worker", 60);
    let own = ready.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    World { agent, _dir: dir, ns, etcd, _etcd_ns: etcd_ns, _lan: lan, own }
}

/// `10.1.I.0/24` for a peer, unless the agent holds it (a put over its own
/// lease would be taken back): then one 50 further on.
fn peer_subnet(w: &World, i: u8) -> String {
    let s = format!("10.1.{i}.0/24");
    if s == w.own {
        format!("10.1.{}.0/24", i + 50)
    } else {
        s
    }
}

fn key_of(subnet: &str) -> String {
    format!("{NET_PREFIX}{}", subnet.replace('/', "-"))
}

#[test]
fn a_peer_whose_lease_expires_is_unprogrammed() {
    let w = world();

    let (subnet, mac) = (peer_subnet(&w, 200), "0a:58:0a:01:c8:00");
    let subnet = subnet.as_str();
    put_peer(&w.etcd, subnet, "172.17.8.150", mac, Some(6));
    wait_until("the peer programmed", 20, || programmed(&w.ns, subnet, mac) == (true, true, true));
    // Nobody renews it: etcd expires the lease and deletes the key.
    wait_until("route, neighbour and FDB entry removed", 30, || {
        programmed(&w.ns, subnet, mac) == (false, false, false)
    });
    assert!(w.etcd.keys(NET_PREFIX).iter().all(|k| k != &key_of(subnet)));
}

#[test]
fn etcd_killed_and_restarted_mid_watch_leaves_no_stale_or_missed_peer() {
    let mut w = world();

    let (b, b_mac) = (peer_subnet(&w, 201), "0a:58:0a:01:c9:00");
    let b = b.as_str();
    put_peer(&w.etcd, b, "172.17.8.151", b_mac, None);
    wait_until("peer B programmed", 20, || programmed(&w.ns, b, b_mac) == (true, true, true));

    // etcd dies under the agent's watch and comes back on the same data.
    let seen = w.agent.line_count();
    w.etcd.kill_and_restart(Duration::from_secs(3));
    // Changes right after the restart, while the agent may still be reconnecting.
    let (c, c_mac) = (peer_subnet(&w, 202), "0a:58:0a:01:ca:00");
    let c = c.as_str();
    assert!(w.etcd.ctl(&["del", &key_of(b)]).0);
    put_peer(&w.etcd, c, "172.17.8.152", c_mac, None);

    wait_until("peer C programmed after the restart", 30, || programmed(&w.ns, c, c_mac) == (true, true, true));
    wait_until("peer B's entries gone", 30, || programmed(&w.ns, b, b_mac) == (false, false, false));
    // The agent kept running and its own lease is still there.
    assert!(w.agent.log().lines().skip(seen).all(|l| !l.contains("panicked")), "{}", w.agent.log());
    let own: Vec<String> = w.etcd.keys(NET_PREFIX).into_iter().filter(|k| k != &key_of(c)).collect();
    assert_eq!(own.len(), 1, "our own lease survives: {own:?}");
}
