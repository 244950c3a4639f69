//! The agent bootstraps etcd from its config: one member, and a static
//! three-member cluster that keeps serving when one member is lost.

mod common;

use common::*;

/// Configs for etcd members named e0.. at 172.17.8.101.. in `dirs`.
fn members(lan: &Lan, n: usize) -> Vec<(Ns, tempfile::TempDir, std::path::PathBuf)> {
    let ips: Vec<String> = (0..n).map(|i| format!("172.17.8.{}", 101 + i)).collect();
    let initial: Vec<String> = ips.iter().enumerate().map(|(i, ip)| format!("e{i}=http://{ip}:2380")).collect();
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("http://{ip}:2379")).collect();
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let ns = Ns::new(&format!("e{i}"));
            lan.attach(&ns, &format!("{ip}/24"));
            let dir = tempfile::tempdir().unwrap();
            let path = node_config(dir.path(), &format!("e{i}"), "etcd", &format!("{ip}/24"), &endpoints[0], "vxlan");
            let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            cfg["etcd"] = serde_json::json!({
                "endpoints": endpoints,
                "member": {
                    "name": format!("e{i}"),
                    "client_url": format!("http://{ip}:2379"),
                    "peer_url": format!("http://{ip}:2380"),
                    "initial_cluster": initial,
                    "initial_cluster_token": "test",
                    "supervise": true
                }
            });
            std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
            (ns, dir, path)
        })
        .collect()
}

fn etcdctl(ns: &Ns, endpoints: &str, args: &str) -> (bool, String) {
    ns.try_sh(&format!("ETCDCTL_API=3 etcdctl --endpoints={endpoints} --command-timeout=5s {args}"))
}

#[test]
fn one_member() {
    let lan = Lan::new();
    let m = members(&lan, 1);
    let agent = start_agent(&m[0].0, &m[0].2);
    agent.wait_for("started etcd member e0", 30);
    agent.wait_for("ready role=etcd", 60);
    let (ok, out) = etcdctl(&m[0].0, "http://172.17.8.101:2379", "get /coreos.com/network/config --print-value-only");
    assert!(ok && out.contains("\"Network\":\"10.1.0.0/16\""), "{out}");

    // The child crashes: the agent starts it again on the same data.
    // The latest start: etcd may have been restarted already while it came up.
    let log = agent.log();
    let started = log.lines().rfind(|l| l.contains("started etcd member e0")).unwrap();
    let pid = started.split("(pid ").nth(1).unwrap().trim_end_matches(')').to_owned();
    let seen = agent.line_count();
    let (killed, said) = m[0].0.try_sh(&format!("kill -KILL {pid}"));
    assert!(killed, "{said}\n{log}");
    agent.wait_for_after(seen, "etcd member e0 exited", 10);
    agent.wait_for_after(seen, "started etcd member e0", 30);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, out) =
            etcdctl(&m[0].0, "http://172.17.8.101:2379", "get /coreos.com/network/config --print-value-only");
        if ok && out.contains("10.1.0.0/16") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "etcd did not come back with its data: {out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn three_members_survive_losing_one() {
    let lan = Lan::new();
    let m = members(&lan, 3);
    let mut agents: Vec<Agent> = m.iter().map(|(ns, _, cfg)| start_agent(ns, cfg)).collect();
    for a in &agents {
        a.wait_for("ready role=etcd", 90);
    }
    let all = "http://172.17.8.101:2379,http://172.17.8.102:2379,http://172.17.8.103:2379";
    let (ok, list) = etcdctl(&m[0].0, all, "member list");
    assert!(ok && list.lines().count() == 3, "{list}");
    // Lose the first member (its agent and the etcd it supervises).
    agents[0].kill();
    m[0].0.try_sh("pkill -f 'etcd --name=e0' || true");
    let rest = "http://172.17.8.102:2379,http://172.17.8.103:2379";
    // Losing the leader costs an election: a write may time out once, as
    // the agent's own writes would, and is retried like them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (mut ok, mut out) = (false, String::new());
    while !ok && std::time::Instant::now() < deadline {
        (ok, out) = etcdctl(&m[1].0, rest, "put /after-loss yes");
    }
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(&m[2].0, rest, "get /after-loss --print-value-only");
    assert!(ok && out.trim() == "yes", "{out}");
    drop(agents);
}

/// Growing the cluster: e0 runs alone (its config names only itself); the
/// administrator adds e1, then e2 (`member add`, as `imgbuild etcd add`
/// does), each booted with a config naming the members so far: each joins
/// the running cluster instead of bootstrapping its own. Then e2's data is
/// wiped: it refuses to start until it is removed and added again, and then
/// rejoins (three members keep a quorum while one is away).
#[test]
fn added_members_join_the_running_cluster_and_a_wiped_one_rejoins() {
    let lan = Lan::new();
    let mut m = members(&lan, 3);
    for (i, (_, _, path)) in m.iter().enumerate() {
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let so_far = 0..=i;
        cfg["etcd"]["endpoints"] = so_far.clone().map(|j| format!("http://172.17.8.{}:2379", 101 + j)).collect();
        cfg["etcd"]["member"]["initial_cluster"] =
            so_far.map(|j| format!("e{j}=http://172.17.8.{}:2380", 101 + j)).collect();
        std::fs::write(path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    }
    let e0 = "http://172.17.8.101:2379";
    let started = |ns: &Ns| {
        let (ok, list) = etcdctl(ns, e0, "member list");
        assert!(ok, "{list}");
        list.lines().filter(|l| l.contains(", started, ")).count()
    };
    let mut agents = vec![start_agent(&m[0].0, &m[0].2)];
    agents[0].wait_for("ready role=etcd", 60);
    // etcd refuses a member add until the last one has been connected a
    // few seconds ("unhealthy cluster"): retried, as an administrator would.
    let add = |name: &str, ip: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (ok, out) = etcdctl(&m[0].0, e0, &format!("member add {name} --peer-urls=http://{ip}:2380"));
            // etcdctl may report an error for an add that went through (its
            // retry then finds no such member): the member list decides.
            let (_, list) = etcdctl(&m[0].0, e0, "member list");
            if ok || list.contains(&format!("http://{ip}:2380")) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{out}");
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    };
    for i in 1..3 {
        add(&format!("e{i}"), &format!("172.17.8.{}", 101 + i));
        let a = start_agent(&m[i].0, &m[i].2);
        a.wait_for(&format!("etcd member e{i} joins the running cluster"), 30);
        a.wait_for("ready role=etcd", 90);
        agents.push(a);
        // The new member's name reaches e0's member list once it has
        // published itself, which may be just after its `ready`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while started(&m[0].0) != i + 1 {
            assert!(std::time::Instant::now() < deadline, "e{i} never listed as started on e0");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let (ok, out) = etcdctl(&m[2].0, "http://172.17.8.103:2379", "get /coreos.com/network/config --print-value-only");
    assert!(ok && out.contains("10.1.0.0/16"), "e2 serves the cluster's data: {out}");

    // e2's disk dies: the cluster still lists it as started, so it waits for the administrator.
    agents[2].kill();
    m[2].0.try_sh("pkill -f 'etcd --name=e2' || true");
    std::fs::remove_dir_all(m[2].1.path().join("var/lib/etcd")).unwrap();
    agents[2] = start_agent(&m[2].0, &m[2].2);
    agents[2].wait_for("its data is gone: run `imgbuild etcd remove e2` and `imgbuild etcd add e2`", 30);
    let (ok, list) = etcdctl(&m[0].0, e0, "member list");
    assert!(ok, "{list}");
    let id = list.lines().find(|l| l.contains(", e2, ")).unwrap().split(',').next().unwrap().to_owned();
    let (ok, out) = etcdctl(&m[0].0, e0, &format!("member remove {id}"));
    assert!(ok, "{out}");
    add("e2", "172.17.8.103");
    agents[2].wait_for("etcd member e2 joins the running cluster", 30);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while started(&m[0].0) < 3 {
        assert!(std::time::Instant::now() < deadline, "e2 did not rejoin");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    drop(agents);
    m.clear();
}
