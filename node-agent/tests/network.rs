//! The agent's network core against real etcd, in network namespaces this
//! test creates: flannel-exact leases, the VXLAN overlay, and pods created
//! by the real CNI plugins reaching each other across hosts without NAT.

mod common;

use common::*;

const NET_PREFIX: &str = "/coreos.com/network/subnets/";

struct Host {
    ns: Ns,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn host(lan: &Lan, name: &str, ip: &str, etcd: &str, backend: &str) -> Host {
    let ns = Ns::new(name);
    lan.attach(&ns, &format!("{ip}/24"));
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(dir.path(), name, "worker", &format!("{ip}/24"), etcd, backend);
    Host { ns, dir, config }
}

/// The subnet in a `ready role=worker subnet=…` line.
fn ready_subnet(line: &str) -> String {
    line.split("subnet=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// A LAN with etcd at 172.17.8.101, in its own namespace.
fn etcd_on_lan() -> (Lan, Ns, Etcd) {
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    (lan, etcd_ns, etcd)
}

fn lease_key(subnet: &str) -> String {
    format!("{NET_PREFIX}{}", subnet.replace('/', "-"))
}

#[test]
fn lease_is_flannels_and_survives_deletion_and_restart() {
    let (lan, _etcd_ns, etcd) = etcd_on_lan();
    let h = host(&lan, "w1", "172.17.8.103", &etcd.endpoint, "vxlan");
    let mut agent = start_agent(&h.ns, &h.config);
    let ready = agent.wait_for("node-agent: ready role=worker subnet=", 60);
    agent.wait_for("node-agent: config from file", 1);
    let subnet = ready_subnet(&ready);
    assert!(subnet.starts_with("10.1.") && subnet.ends_with(".0/24"), "{ready}");

    // The network config, put-if-absent from the cluster file.
    let config = etcd.get("/coreos.com/network/config").unwrap();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(v["Network"], "10.1.0.0/16");
    assert_eq!(v["SubnetLen"], 24);
    assert_eq!(v["Backend"]["Type"], "vxlan");
    assert_eq!(v["Backend"]["VNI"], 1);

    // The lease, field by field, on a 24 h etcd lease.
    let value = etcd.get(&lease_key(&subnet)).expect("lease key");
    let vtep = h.ns.sh("cat /sys/class/net/flannel.1/address").trim().to_owned();
    assert_eq!(
        value,
        format!(
            r#"{{"PublicIP":"172.17.8.103","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{vtep}"}}}}"#
        )
    );
    let (_, json) = etcd.ctl(&["get", &lease_key(&subnet), "-w", "json"]);
    let lease_id = serde_json::from_str::<serde_json::Value>(&json).unwrap()["kvs"][0]["lease"].as_i64().unwrap();
    let (_, ttl) = etcd.ctl(&["lease", "timetolive", &format!("{lease_id:x}")]);
    let granted: u64 = ttl.split("granted with TTL(").nth(1).unwrap().split('s').next().unwrap().parse().unwrap();
    assert_eq!(granted, 86400, "{ttl}");

    // The VXLAN device as flannel makes it.
    let link = h.ns.sh("ip -d link show flannel.1");
    for want in ["vxlan id 1 ", "local 172.17.8.103", "dev eth0", "dstport 8472", "nolearning", "mtu 1450"] {
        assert!(link.contains(want), "{want} missing:\n{link}");
    }
    let addr = h.ns.sh("ip -4 -o addr show dev flannel.1");
    assert!(addr.contains(&format!("inet {}/32", subnet.trim_end_matches("/24"))), "{addr}");

    // Kubelet's files.
    let env = std::fs::read_to_string(h.dir.path().join("run/flannel/subnet.env")).unwrap();
    let first = subnet.replace(".0/24", ".1/24");
    assert_eq!(
        env,
        format!("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET={first}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    );
    assert!(h.dir.path().join("etc/cni/net.d/10-imgbuild.conflist").is_file());
    assert_eq!(h.ns.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    let nat = h.ns.sh("iptables -t nat -S");
    assert!(nat.contains("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG"), "{nat}");
    assert!(nat.contains(&format!("-A FLANNEL-POSTRTG -s {subnet} -d 10.1.0.0/16")), "{nat}");

    // Deleted by hand: re-acquired, same subnet.
    let seen = agent.line_count();
    assert!(etcd.ctl(&["del", &lease_key(&subnet)]).0);
    agent.wait_for_after(seen, "our lease was deleted", 30);
    agent.wait_for_after(seen, &format!("acquired lease {subnet}"), 30);
    assert!(etcd.get(&lease_key(&subnet)).is_some());

    // Restarted: same subnet, same VTEP MAC.
    agent.kill();
    let agent = start_agent(&h.ns, &h.config);
    let again = agent.wait_for("node-agent: ready role=worker", 60);
    assert_eq!(ready_subnet(&again), subnet);
    assert_eq!(h.ns.sh("cat /sys/class/net/flannel.1/address").trim(), vtep);
    assert_eq!(etcd.keys(NET_PREFIX), [lease_key(&subnet)]);
    // The jumps into flannel's chains are not added twice.
    let nat = h.ns.sh("iptables -t nat -S POSTROUTING");
    assert_eq!(nat.matches("-j FLANNEL-POSTRTG").count(), 1, "{nat}");
    let filter = h.ns.sh("iptables -t filter -S FORWARD");
    assert_eq!(filter.matches("-j FLANNEL-FWD").count(), 1, "{filter}");
}

/// With flannel's `EnableNFTables` the rules are one nftables table, as
/// `nft` prints it, and no iptables chain: pod traffic leaving the pod
/// network is masqueraded (etcd's host has no route back to pods, so an
/// answer proves it), and a restart replaces the table rather than adding
/// to it.
#[test]
fn nftables_rules_masquerade_pods_and_are_replaced_whole() {
    let (lan, etcd_ns, etcd) = etcd_on_lan();
    let h = host(&lan, "n1", "172.17.8.103", &etcd.endpoint, "vxlan");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&h.config).unwrap()).unwrap();
    cfg["network"]["enable_nftables"] = true.into();
    std::fs::write(&h.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut agent = start_agent(&h.ns, &h.config);
    let subnet = ready_subnet(&agent.wait_for("node-agent: ready role=worker subnet=", 60));
    let config: serde_json::Value = serde_json::from_str(&etcd.get("/coreos.com/network/config").unwrap()).unwrap();
    assert_eq!(config["EnableNFTables"], true);

    let table = h.ns.sh("nft list table ip flannel-ipv4");
    let want = include_str!("golden/flannel.nft").replace("10.1.5.0/24", &subnet);
    assert_eq!(table, want);
    let nat = h.ns.sh("iptables -t nat -S");
    assert!(!nat.contains("FLANNEL"), "{nat}");

    let (pod, ip) = pod(&h, "np");
    let _serve = serve_probe(&etcd_ns);
    let (_, out) = pod.try_sh(&format!("{} probe send --to 172.17.8.101:7946 --tries 40", agent_bin()));
    assert!(out.contains(&format!("reached; it saw 172.17.8.103 (we are {ip})")), "{out}");

    agent.kill();
    let again = start_agent(&h.ns, &h.config);
    again.wait_for("node-agent: ready role=worker", 60);
    assert_eq!(h.ns.sh("nft list table ip flannel-ipv4"), want);
    assert_eq!(h.ns.sh("nft list tables").matches("flannel-ipv4").count(), 1);
}

/// A LAN with etcd at 172.17.8.101 and two worker hosts at .103 and .104.
struct TwoHosts {
    a: Host,
    b: Host,
    etcd: Etcd,
    _etcd_ns: Ns,
    _lan: Lan,
}

fn two_hosts(tag: &str, backend: &str) -> TwoHosts {
    let (lan, etcd_ns, etcd) = etcd_on_lan();
    let a = host(&lan, &format!("{tag}a"), "172.17.8.103", &etcd.endpoint, backend);
    let b = host(&lan, &format!("{tag}b"), "172.17.8.104", &etcd.endpoint, backend);
    TwoHosts { a, b, etcd, _etcd_ns: etcd_ns, _lan: lan }
}

/// Creates a pod in a fresh namespace by running the CNI plugins from the
/// agent's conflist as kubelet would; returns (pod namespace, pod IP).
fn pod(h: &Host, name: &str) -> (Ns, String) {
    let pod = Ns::new(name);
    let out = run(h
        .ns
        .cmd(agent_bin())
        .args(["pod", "add", "--name", name, "--id", &pod.name, "--netns"])
        .arg(pod.path())
        .arg("--config")
        .arg(&h.config));
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (pod, ip)
}

/// Restarting the agent keeps its subnet and VTEP MAC, and established pod
/// traffic flows on: killed (as on a crash), or ended by a panic in one of
/// its tasks and started again (as systemd's Restart=always does). A ping
/// every 10 ms across the overlay measures the traffic lost.
#[test]
fn agent_restarts_keep_the_lease_and_pod_traffic() {
    use std::os::unix::process::ExitStatusExt;
    let TwoHosts { a, b, .. } = &two_hosts("r", "vxlan");
    let mut agent_a = start_agent(&a.ns, &a.config);
    let _agent_b = start_agent(&b.ns, &b.config);
    let subnet = ready_subnet(&agent_a.wait_for("ready role=worker", 60));
    _agent_b.wait_for("ready role=worker", 60);
    let vtep = a.ns.sh("cat /sys/class/net/flannel.1/address").trim().to_owned();
    let (pod_a, _) = pod(a, "qa");
    let (_pod_b, ip_b) = pod(b, "qb");

    let count = 1200;
    let mut ping = {
        let mut c = pod_a.cmd("ping");
        c.args(["-n", "-i", "0.01", "-W", "1", "-c", &count.to_string(), &ip_b]);
        Agent::spawn(c)
    };
    ping.wait_for("bytes from", 10);
    let same_lease = |agent: &Agent| {
        assert_eq!(ready_subnet(&agent.wait_for("ready role=worker", 60)), subnet);
        assert_eq!(a.ns.sh("cat /sys/class/net/flannel.1/address").trim(), vtep);
    };

    // Killed outright, then started again.
    agent_a.kill();
    let mut agent_a = start_agent(&a.ns, &a.config);
    same_lease(&agent_a);
    // A task panics: the process ends (SIGABRT) rather than run on half-dead.
    agent_a.kill();
    let mut panicky = {
        let mut c = a.ns.cmd(agent_bin());
        c.env("NODE_AGENT_FAILPOINT", "panic-in-task").arg("run").arg("--config").arg(&a.config);
        Agent::spawn(c)
    };
    same_lease(&panicky);
    let status = panicky.wait_exit(30).expect("the panicking agent exits");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{}", panicky.log());
    assert!(panicky.log().contains("failpoint panic-in-task"), "{}", panicky.log());
    let again = start_agent(&a.ns, &a.config);
    same_lease(&again);
    assert!(!again.log().contains("failpoint"), "the failpoint fires once per boot");

    assert!(ping.wait_exit(60).is_some(), "ping did not finish");
    let summary = ping.log();
    let line = summary.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("{summary}"));
    let received: u32 = line.split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let lost = count - received;
    eprintln!("agent restarts (kill, panic, start x3): {lost} of {count} pings lost, about {} ms", lost * 10);
    // The kernel keeps forwarding while no agent runs: at most 100 ms lost.
    assert!(lost <= 10, "{line}");
}

fn probe(from: &Ns, to_ip: &str) -> String {
    let (ok, out) = from.try_sh(&format!("{} probe send --to {to_ip}:7946 --tries 40", agent_bin()));
    assert!(ok, "probe from {} to {to_ip} failed: {out}", from.name);
    out
}

#[test]
fn pods_on_two_hosts_reach_each_other_without_nat() {
    let TwoHosts { a, b, etcd, .. } = &two_hosts("w", "vxlan");
    let agent_a = start_agent(&a.ns, &a.config);
    let agent_b = start_agent(&b.ns, &b.config);
    let sa = ready_subnet(&agent_a.wait_for("ready role=worker", 60));
    let sb = ready_subnet(&agent_b.wait_for("ready role=worker", 60));
    assert_ne!(sa, sb);

    let (pod_a, ip_a) = pod(a, "pa");
    let (pod_b, ip_b) = pod(b, "pb");
    assert!(ip_a.starts_with(sa.trim_end_matches("0/24")), "{ip_a} not in {sa}");
    assert!(ip_b.starts_with(sb.trim_end_matches("0/24")), "{ip_b} not in {sb}");
    let _serve = (serve_probe(&pod_a), serve_probe(&pod_b));
    let ab = probe(&pod_a, &ip_b);
    assert!(ab.contains(&format!("it saw {ip_a} (we are {ip_a})")), "{ab}");
    let ba = probe(&pod_b, &ip_a);
    assert!(ba.contains(&format!("it saw {ip_b} (we are {ip_b})")), "{ba}");

    // Host a's view of b: neighbour, FDB, onlink route.
    let vtep_b = b.ns.sh("cat /sys/class/net/flannel.1/address").trim().to_owned();
    let gw_b = sb.trim_end_matches("/24");
    let routes = a.ns.sh("ip route");
    assert!(routes.contains(&format!("{sb} via {gw_b} dev flannel.1 onlink")), "{routes}");
    assert!(a.ns.sh("ip neigh show dev flannel.1").contains(&format!("{gw_b} lladdr {vtep_b} PERMANENT")));
    assert!(a.ns.sh("bridge fdb show dev flannel.1").contains(&format!("{vtep_b} dst 172.17.8.104 self permanent")));

    // A lease written as real flanneld writes it is routed the same way,
    // and removed again when the lease goes.
    // (At subnets neither host holds: a put over a host's own lease is taken back.)
    let free = |taken: &[&str]| {
        (200..210)
            .map(|i| format!("10.1.{i}.0/24"))
            .find(|s| s != &sa && s != &sb && !taken.contains(&s.as_str()))
            .unwrap()
    };
    let (fake, bad) = (free(&[]), free(&[]));
    let bad = if bad == fake { free(&[fake.as_str()]) } else { bad };
    let fake_gw = fake.trim_end_matches("/24");
    let seen = agent_a.line_count();
    let flanneld = r#"{"PublicIP":"172.17.8.110","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"6e:24:cf:11:72:9a"}}"#;
    assert!(etcd.ctl(&["put", &lease_key(&fake), flanneld]).0);
    agent_a.wait_for_after(seen, &format!("lease {fake} added"), 20);
    assert!(a.ns.sh("ip route").contains(&format!("{fake} via {fake_gw} dev flannel.1 onlink")));
    let neigh = a.ns.sh("ip neigh show dev flannel.1");
    assert!(neigh.contains(&format!("{fake_gw} lladdr 6e:24:cf:11:72:9a PERMANENT")), "{neigh}\n{}", agent_a.log());
    assert!(a.ns.sh("bridge fdb show dev flannel.1").contains("6e:24:cf:11:72:9a dst 172.17.8.110 self permanent"));
    // A malformed lease written by someone else is skipped, not fatal.
    assert!(etcd.ctl(&["put", &lease_key(&bad), "{not json"]).0);
    agent_a.wait_for_after(seen, "skipping malformed lease", 20);
    assert!(etcd.ctl(&["del", &lease_key(&fake)]).0);
    agent_a.wait_for_after(seen, &format!("lease {fake} removed"), 20);
    assert!(!a.ns.sh("ip route").contains(&fake));
    assert!(!a.ns.sh("ip neigh show dev flannel.1").contains(&format!("{fake_gw} ")));
    assert!(!a.ns.sh("bridge fdb show dev flannel.1").contains("6e:24:cf:11:72:9a"));
    // Traffic still flows after all that.
    probe(&pod_a, &ip_b);
}

fn serve_probe(pod: &Ns) -> Agent {
    let mut c = pod.cmd(agent_bin());
    c.args(["probe", "serve"]);
    Agent::spawn(c)
}

#[test]
fn host_gw_routes_pods_through_node_ips() {
    let TwoHosts { a, b, etcd, .. } = &two_hosts("g", "host-gw");
    let agent_a = start_agent(&a.ns, &a.config);
    let agent_b = start_agent(&b.ns, &b.config);
    agent_a.wait_for("ready role=worker", 60);
    let sb = ready_subnet(&agent_b.wait_for("ready role=worker", 60));
    let value = etcd.get(&lease_key(&sb)).unwrap();
    assert_eq!(value, r#"{"PublicIP":"172.17.8.104","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}"#);
    let (pod_a, ip_a) = pod(a, "ha");
    let (pod_b, ip_b) = pod(b, "hb");
    let _s = (serve_probe(&pod_a), serve_probe(&pod_b));
    let routes = a.ns.sh("ip route");
    assert!(routes.contains(&format!("{sb} via 172.17.8.104 dev eth0")), "{routes}");
    assert!(!a.ns.try_sh("ip link show flannel.1").0, "host-gw must not make a VXLAN device");
    assert!(probe(&pod_a, &ip_b).contains(&format!("it saw {ip_a}")));
    assert!(probe(&pod_b, &ip_a).contains(&format!("it saw {ip_b}")));
}

#[test]
fn agent_started_before_etcd_waits_then_converges() {
    let lan = Lan::new();
    let etcd_ns = Ns::new("etcd");
    lan.attach(&etcd_ns, "172.17.8.101/24");
    let a = host(&lan, "ea", "172.17.8.103", "http://172.17.8.101:2379", "vxlan");
    let agent = start_agent(&a.ns, &a.config);
    agent.wait_for("network config (try 1, retrying)", 30);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let etcd = Etcd::start(Some(&etcd_ns), "172.17.8.101");
    let subnet = ready_subnet(&agent.wait_for("ready role=worker", 60));
    assert!(etcd.get(&lease_key(&subnet)).is_some());
}
