//! What the agent makes of every kind of answer a config server may give:
//! each bad one refused with one clear error, nothing written. One golden
//! file (`tests/golden/http-responses.txt`; `UPDATE_GOLDEN=1` rewrites it).
//! The server is on loopback and answers exactly the bytes each case names.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use node_agent::config::providers::{apply_ignition, fetch_config};

const NODE_CONFIG: &str = r#"{"cluster":"c","node":{"name":"w","role":"worker","address":"172.17.8.103/24","mac":"52:54:00:00:00:01"},"etcd":{"endpoints":["http://172.17.8.101:2379"]},"network":{"network":"10.1.0.0/16","subnet_len":24,"backend":{"type":"vxlan","vni":1,"port":8472}}}"#;

fn ignition_with_node_config() -> String {
    ignition_with(NODE_CONFIG)
}

fn ignition_with(node_config: &str) -> String {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(node_config);
    format!(
        r#"{{"ignition":{{"version":"3.3.0"}},"storage":{{"files":[{{"path":"/etc/node-agent/config.json","mode":384,"contents":{{"source":"data:;base64,{data}"}}}}]}}}}"#
    )
}

fn ok(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

fn status(line: &str) -> String {
    format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// Raw responses by request path ("" closes the connection unanswered).
fn responses(base: &str) -> BTreeMap<&'static str, String> {
    let merge_404 =
        format!(r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{{"source":"{base}/not-found"}}]}}}}}}"#);
    // A merge stub whose merged config is not the one its hash names.
    let wrong_hash = format!(
        r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{{"source":"{base}/good","verification":{{"hash":"sha512-{}"}}}}]}}}}}}"#,
        "0".repeat(128)
    );
    BTreeMap::from([
        ("/good", ok(&ignition_with_node_config())),
        ("/not-found", status("404 Not Found")),
        ("/server-error", status("500 Internal Server Error")),
        ("/forbidden", status("403 Forbidden")),
        ("/truncated", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"ignition\"".into()),
        ("/html", ok("<html><body>It works!</body></html>")),
        ("/empty", ok("")),
        ("/spec-2", ok(r#"{"ignition":{"version":"2.2.0"}}"#)),
        ("/no-node-config", ok(r#"{"ignition":{"version":"3.3.0"}}"#)),
        ("/bad-node-config", ok(&ignition_with(&NODE_CONFIG.replace("worker", "wrker")))),
        ("/redirect", "HTTP/1.1 302 Found\r\nLocation: /good\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()),
        ("/loop", "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()),
        ("/hangup", String::new()),
        ("/garbage", "SSH-2.0-OpenSSH_9.2\r\n".into()),
        ("/merge-404", ok(&merge_404)),
        ("/merge-wrong-hash", ok(&wrong_hash)),
    ])
}

fn server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let answers = responses(&base);
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut r = BufReader::new(&stream);
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let answer = answers.get(path.as_str()).cloned().unwrap_or_else(|| status("404 Not Found"));
            let _ = (&stream).write_all(answer.as_bytes());
        }
    });
    base
}

fn outcome(url: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let result = fetch_config(url, 1).and_then(|bytes| apply_ignition(&bytes, root.path()));
    match result {
        Ok(cfg) => format!("ok: node {}", cfg.node.name),
        Err(e) => {
            let text = format!("{e:#}").replace(&root.path().display().to_string(), "ROOT");
            let written = walk(root.path());
            assert!(written.is_empty(), "{url} failed yet wrote {written:?}");
            format!("error: {text}")
        }
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn http_responses_are_golden() {
    let base = server();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cases: Vec<(String, String)> =
        responses(&base).keys().map(|path| (path.to_string(), format!("{base}{path}"))).collect();
    cases.push(("(connection refused)".into(), format!("{closed}/x")));
    let text: String = cases
        .iter()
        .map(|(name, url)| format!("{name}\n  {}\n", outcome(url).replace(&base, "SERVER").replace(&closed, "CLOSED")))
        .collect();
    testkit::assert_golden!("golden/http-responses.txt", &text);
}
