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
