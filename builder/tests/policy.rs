//! `imgbuild policy test` as a user runs it: the verdict matrix of a small
//! cluster (policy/tests/cluster, whose verdicts policy/tests/semantics.rs
//! works out by hand), ports from the pods or from --ports, and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{imgbuild, run_ok, start_tls_etcd, TlsEtcd};

fn cluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/cluster")
}

fn policy_test(extra: &[&str]) -> std::process::Output {
    let dir = cluster();
    let mut c = imgbuild();
    c.args(["policy", "test", "--pods"]).arg(dir.join("pods.yaml")).arg("--policies").arg(dir.join("policies"));
    c.args(extra).output().unwrap()
}

#[test]
fn the_matrix_of_every_pod_pair_and_port_is_golden_and_sorted() {
    let out = policy_test(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert!(f.len() == 4 && f[0] != f[1] && ["allow", "deny"].contains(&f[3]), "{l}");
    }
    // Each ordered pair once per port of the destination: 6 sources for each
    // of the 8 destination ports (client has none).
    assert_eq!(lines.len(), 6 * 8, "{text}");
    assert!(
        text.contains("dev/client prod/web 80/TCP allow\n") && text.contains("dev/client prod/web 9100/TCP deny\n")
    );
    testkit::assert_golden!("golden/policy-test.txt", &text);
}

#[test]
fn ports_from_the_command_line_apply_to_every_pair() {
    let out = run_ok(
        imgbuild()
            .args(["policy", "test", "--ports", "80,53/udp", "--pods"])
            .arg(cluster().join("pods.yaml"))
            .arg("--policies")
            .arg(cluster().join("policies")),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 7 * 6 * 2, "{text}");
    assert!(text.contains("prod/web dev/client 80/TCP allow\n"), "{text}");
    assert!(text.contains("dev/client default/ext 80/TCP allow\n"), "{text}");
    assert!(text.contains("dev/client prod/dns 53/UDP allow\n"), "{text}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/bad/except-outside-cidr.yaml");
    for (args, want) in [
        (
            vec!["--policies".into(), bad.display().to_string()],
            "documents[0].spec.ingress[0].from[0].ipBlock.except[1]: 10.2.0.0/24 is not inside the cidr",
        ),
        (
            vec!["--policies".into(), cluster().join("policies").display().to_string(), "--ports".into(), "0".into()],
            "is not a port",
        ),
        (vec!["--policies".into(), tmp.path().join("missing").display().to_string()], "missing"),
    ] {
        let mut c = imgbuild();
        c.args(["policy", "test", "--pods"]).arg(cluster().join("pods.yaml")).args(&args);
        let out = c.output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        // Bad files get one line; clap adds its usage hint to a bad flag.
        assert!(err.lines().next().unwrap().contains(want), "{err}");
        assert!(err.lines().count() == 1 || err.starts_with("error: invalid value"), "{err}");
        assert!(out.stdout.is_empty());
    }
    std::fs::write(tmp.path().join("pods.yaml"), "pods:\n  - {name: a, ip: 10.0.0.1}\n  - {name: a, ip: 10.0.0.2}\n")
        .unwrap();
    let out = imgbuild()
        .args(["policy", "test", "--pods"])
        .arg(tmp.path().join("pods.yaml"))
        .arg("--policies")
        .arg(cluster().join("policies"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pods[1]: default/a is listed twice"));
}

/// A name that would forge an output line, a folder with no manifests, an
/// object given in two files: each refused, naming the place.
#[test]
fn forged_names_empty_folders_and_twice_defined_objects_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let forged = "pods:\n  - {name: \"x a/web 80/TCP allow\\nevil\", ip: 10.0.0.1}\n";
    std::fs::write(tmp.path().join("forged.yaml"), forged).unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let twice = tmp.path().join("twice");
    std::fs::create_dir(&twice).unwrap();
    let web =
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: prod}\nspec: {}\n";
    std::fs::write(twice.join("a.yaml"), web).unwrap();
    std::fs::write(twice.join("b.yaml"), web).unwrap();
    let also = format!(
        "{}: documents[0]: NetworkPolicy prod/web is also defined at {} documents[0]",
        twice.join("b.yaml").display(),
        twice.join("a.yaml").display()
    );
    for (pods, policies, want) in [
        (
            tmp.path().join("forged.yaml"),
            cluster().join("policies"),
            "pods[0].name: \"x a/web 80/TCP allow\\nevil\" is not a name".to_owned(),
        ),
        (
            cluster().join("pods.yaml"),
            tmp.path().join("empty"),
            "no .yaml, .yml or .json manifests in this folder".to_owned(),
        ),
        (cluster().join("pods.yaml"), twice.clone(), also),
    ] {
        let out =
            imgbuild().args(["policy", "test", "--pods"]).arg(&pods).arg("--policies").arg(&policies).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&want) && err.lines().count() == 1, "{want}\n{err}");
        assert!(out.stdout.is_empty());
    }
}

fn policy_cmd(etcd: &TlsEtcd, pki: &Path, args: &[&str]) -> std::process::Output {
    let mut c = imgbuild();
    c.arg("policy").args(args).arg("--pki").arg(pki).arg("--endpoints").arg(&etcd.url);
    c.output().unwrap()
}

#[test]
fn apply_get_and_delete_against_a_real_etcd_with_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let etcd = start_tls_etcd(tmp.path(), &pki);
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    // etcd answers once it has elected itself: retry the first apply briefly.
    let policies = cluster().join("policies");
    let mut applied = policy_cmd(&etcd, &pki, &["apply", "-f", policies.to_str().unwrap()]);
    for _ in 0..50 {
        if applied.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        applied = policy_cmd(&etcd, &pki, &["apply", "-f", policies.to_str().unwrap()]);
    }
    assert!(applied.status.success(), "{}", text(&applied));
    let said = text(&applied);
    assert!(said.contains("namespace/dev applied") && said.contains("networkpolicy/prod/web applied"), "{said}");
    let all = policy_cmd(&etcd, &pki, &["get"]);
    assert!(all.status.success(), "{}", text(&all));
    let yaml = String::from_utf8(all.stdout).unwrap();
    assert_eq!(yaml.matches("kind: NetworkPolicy").count(), 8, "{yaml}");
    // What get prints applies again and evaluates the same (a round trip).
    let again = tmp.path().join("again.yaml");
    std::fs::write(&again, &yaml).unwrap();
    let ns = tmp.path().join("again");
    std::fs::create_dir(&ns).unwrap();
    std::fs::copy(&again, ns.join("policies.yaml")).unwrap();
    std::fs::copy(cluster().join("policies/00-namespaces.yaml"), ns.join("00-namespaces.yaml")).unwrap();
    let before = run_ok(
        imgbuild()
            .args(["policy", "test", "--pods"])
            .arg(cluster().join("pods.yaml"))
            .arg("--policies")
            .arg(cluster().join("policies")),
    );
    let after = run_ok(
        imgbuild().args(["policy", "test", "--pods"]).arg(cluster().join("pods.yaml")).arg("--policies").arg(&ns),
    );
    assert_eq!(before.stdout, after.stdout, "the stored policies mean the same");
    let one = policy_cmd(&etcd, &pki, &["get", "prod/web"]);
    let one = String::from_utf8(one.stdout).unwrap();
    assert!(one.contains("name: web") && one.matches("kind:").count() == 1, "{one}");
    assert!(policy_cmd(&etcd, &pki, &["delete", "prod/web"]).status.success());
    let gone = policy_cmd(&etcd, &pki, &["get", "prod/web"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(text(&gone).contains("networkpolicy prod/web not found"));
    assert_eq!(policy_cmd(&etcd, &pki, &["delete", "prod/web"]).status.code(), Some(1));
    // A bad manifest stores nothing, and says where it is wrong.
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/bad/port-out-of-range.yaml");
    let refused = policy_cmd(&etcd, &pki, &["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let count =
        String::from_utf8(policy_cmd(&etcd, &pki, &["get"]).stdout).unwrap().matches("kind: NetworkPolicy").count();
    assert_eq!(count, 7);
    // What a node certificate could write under the prefix: garbage, a
    // policy under another's name. get names and skips them, and goes on.
    let ca = imgbuild::pki::Pki::load(&pki).unwrap();
    let admin = ca.issue_admin();
    let tls = imgbuild::etcd::ClientTls { ca: ca.ca_cert().to_owned(), cert: admin.cert, key: admin.key };
    let raw = imgbuild::etcd::Etcd::new(vec![etcd.url.clone()], Some(tls)).unwrap();
    let stored = raw.range("/imgbuild/policy/v1/networkpolicies/prod/db").unwrap();
    let db = stored[0].1.clone();
    raw.put_all(&[
        ("/imgbuild/policy/v1/networkpolicies/Evil/\u{1b}[2Jx".into(), b"garbage".to_vec()),
        ("/imgbuild/policy/v1/networkpolicies/prod/zz".into(), db),
    ])
    .unwrap();
    let out = policy_cmd(&etcd, &pki, &["get"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipping etcd key /imgbuild/policy/v1/networkpolicies/Evil/\\u{1b}[2Jx"), "{err}");
    assert!(err.contains("skipping etcd key /imgbuild/policy/v1/networkpolicies/prod/zz: holds prod/db"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("kind: NetworkPolicy").count(), 7);
    // Another CA's admin is not let in.
    let stranger = tmp.path().join("other-pki");
    imgbuild::pki::Pki::load_or_create(&stranger, "imgbuild").unwrap();
    let out = policy_cmd(&etcd, &stranger, &["get"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(policy_cmd(&etcd, &pki, &["get", "not a name"]).status.code(), Some(2));

    // `label`: a pod with an endpoint (as its node's agent publishes it)
    // gets labels set and removed, stored where the agents read them.
    let endpoint = imgbuild_policy::store::Endpoint {
        node: "worker-1".into(),
        sandbox: "abc123".into(),
        namespace: "prod".into(),
        name: "web-1".into(),
        uid: String::new(),
        ip: "10.1.5.2".parse().unwrap(),
        labels: [("app".to_owned(), "web".to_owned()), ("canary".to_owned(), "yes".to_owned())].into(),
        ports: vec![],
    };
    raw.put_all(&[(endpoint.key(), serde_json::to_vec(&endpoint).unwrap())]).unwrap();
    let out = policy_cmd(&etcd, &pki, &["label", "prod/web-1", "tier=front", "canary-"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/prod/web-1 labeled\n");
    let stored = raw.range(&imgbuild_policy::store::pod_labels_key("prod", "web-1")).unwrap();
    assert_eq!(String::from_utf8_lossy(&stored[0].1), r#"{"app":"web","tier":"front"}"#);
    // Later changes start from the stored labels.
    assert!(policy_cmd(&etcd, &pki, &["label", "prod/web-1", "app-"]).status.success());
    let stored = raw.range(&imgbuild_policy::store::pod_labels_key("prod", "web-1")).unwrap();
    assert_eq!(String::from_utf8_lossy(&stored[0].1), r#"{"tier":"front"}"#);
    let bad = policy_cmd(&etcd, &pki, &["label", "prod/web-1", "bad!=1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("CHANGE: [0]: \"bad!\" is not a label key"),
        "{}",
        text(&bad)
    );
    assert_eq!(policy_cmd(&etcd, &pki, &["label", "prod/web-1", "plain"]).status.code(), Some(2));
    let missing = policy_cmd(&etcd, &pki, &["label", "prod/nope", "a=b"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pod prod/nope not found"), "{}", text(&missing));
}
