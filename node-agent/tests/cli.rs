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
    // An https etcd without client certificates (server-only TLS), as flanneld allows.
    let https = GOOD.replace("http://", "https://");
    assert!(https.contains("https://"));
    let (code, _, err) = check(&https);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_names_the_bad_field() {
    let (code, _, err) = check(&GOOD.replace("\"subnet_len\": 24", "\"subnet_len\": 16"));
    assert_eq!(code, 2);
    assert!(err.contains("network.subnet_len: 16 does not fit the pod network 10.1.0.0/16"), "{err}");
    let (code, _, err) = check(&GOOD.replace("\"mac\": \"52:54:00:00:00:01\"", "\"mac\": \"zz\""));
    assert_eq!(code, 2);
    assert!(err.contains("node.mac"), "{err}");
    let (code, _, err) = check(&GOOD.replace("\"cluster\": \"c\",", "\"cluster\": \"c\", \"extra\": 1,"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `extra`"), "{err}");
}

/// Every file in tests/bad-input is refused by `check` with status 2 and the
/// one error line in its `.err` golden (`UPDATE_GOLDEN=1` rewrites them).
#[test]
fn bad_input_is_refused_with_its_golden_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "ign"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "{cases:?}");
    for case in cases {
        let flag = if case.extension().unwrap() == "ign" { "--ignition" } else { "--config" };
        let out = agent().arg("check").arg(flag).arg(&case).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap().replace(&dir.display().to_string(), "bad-input");
        assert_eq!(out.status.code(), Some(2), "{}: {err}", case.display());
        assert_eq!(err.lines().count(), 1, "{}: one line, not:\n{err}", case.display());
        let golden = case.with_extension(format!("{}.err", case.extension().unwrap().to_str().unwrap()));
        testkit::assert_golden(&golden, &err);
    }
    // `..` in an Ignition path, and links to outside folders, stay inside the scratch root.
    for escaped in ["/tmp/imgbuild-escaped", "/tmp/imgbuild-escaped-via-link"] {
        assert!(!std::path::Path::new(escaped).exists(), "a config wrote {escaped}, outside its root");
    }
}
