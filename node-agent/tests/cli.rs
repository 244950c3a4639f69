//! The agent's command line. (Being an integration test, this also makes
//! `cargo test --workspace` build the `node-agent` binary that the builder's
//! tests embed.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_node-agent"))
}

const GOOD: &str = r#"{
  "cluster": "c",
  "node": { "name": "w", "role": "worker", "address": "172.17.8.103/24", "mac": "52:54:00:00:00:01" },
  "etcd": { "endpoints": ["http://127.0.0.1:2379"] },
  "network": { "network": "10.1.0.0/16", "subnet_len": 24, "backend": { "type": "vxlan", "vni": 1, "port": 8472 } }
}"#;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let out = agent().arg("check").arg("--config").arg(&path).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn check_accepts_a_good_config() {
    let (code, out, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node w role worker address 172.17.8.103/24"), "{out}");
}

#[test]
fn check_names_the_bad_field() {
    let (code, _, err) = check(&GOOD.replace("\"subnet_len\": 24", "\"subnet_len\": 16"));
    assert_eq!(code, 2);
    assert!(err.contains("network.subnet_len: 16 does not fit pod network 10.1.0.0/16"), "{err}");
    let (code, _, err) = check(&GOOD.replace("\"mac\": \"52:54:00:00:00:01\"", "\"mac\": \"zz\""));
    assert_eq!(code, 2);
    assert!(err.contains("node.mac"), "{err}");
    let (code, _, err) = check(&GOOD.replace("\"cluster\": \"c\",", "\"cluster\": \"c\", \"extra\": 1,"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `extra`"), "{err}");
}
