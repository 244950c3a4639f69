//! NetworkPolicy semantics on a small cluster (tests/cluster): each verdict
//! below is worked out by hand from Kubernetes' documented rules, with the
//! rule it exercises. The golden file pins the whole matrix.

use std::path::Path;

use imgbuild_policy::{load_manifests, parse_pods, Cluster, Pod, Protocol, Verdict};

fn cluster() -> (Cluster, Vec<Pod>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster");
    let pods = parse_pods(&std::fs::read_to_string(dir.join("pods.yaml")).unwrap(), "pods.yaml").unwrap();
    let m = load_manifests(&dir.join("policies")).unwrap();
    assert_eq!((m.policies.len(), m.namespaces.len()), (8, 2));
    (Cluster::new(m.policies, &m.namespaces, &pods.namespaces), pods.pods)
}

fn check(cases: &[(&str, &str, u16, Protocol, Verdict, &str)]) {
    let (c, pods) = cluster();
    let pod = |id: &str| pods.iter().find(|p| p.id() == id).unwrap_or_else(|| panic!("no pod {id}"));
    for (from, to, port, proto, want, why) in cases {
        let got = c.verdict(pod(from), pod(to), *port, *proto);
        assert_eq!(got, *want, "{from} -> {to} {port}/{}: {why}", proto.as_str());
    }
}

use Protocol::{Sctp, Tcp, Udp};
use Verdict::{Allow, Deny};

#[test]
fn ingress_isolation_and_rules_adding_up() {
    check(&[
        (
            "dev/client",
            "prod/web",
            80,
            Tcp,
            Allow,
            "namespaceSelector env=dev (a Namespace object's label), named port http",
        ),
        ("prod/db", "prod/web", 80, Tcp, Allow, "podSelector {} in a peer means every pod of the policy's namespace"),
        ("default/ext", "prod/web", 80, Tcp, Deny, "isolated by default-deny; no rule names default's pods"),
    ]);
}

#[test]
fn both_selectors_in_one_peer_and_port_ranges() {
    check(&[
        (
            "monitoring/prom",
            "prod/web",
            9100,
            Tcp,
            Allow,
            "namespace purpose=monitoring AND pod app=prom; 9100 in 9000-9200",
        ),
        ("monitoring/prom", "prod/web", 80, Tcp, Deny, "80 is outside the range, and no other rule admits monitoring"),
        ("prod/db", "prod/web", 9100, Tcp, Deny, "the metrics rule needs prom; the web rule only opens http"),
        ("monitoring/prom", "prod/db", 5432, Tcp, Deny, "db admits app=web only"),
        ("prod/web", "prod/db", 5432, Tcp, Allow, "podSelector app=web in db's namespace"),
    ]);
}

#[test]
fn protocols_named_ports_and_ip_blocks() {
    check(&[
        ("dev/client", "prod/dns", 53, Udp, Allow, "namespaceSelector {} is every namespace; UDP 53"),
        ("default/ext", "prod/dns", 53, Tcp, Deny, "only UDP is opened; the protocol defaults to TCP elsewhere"),
        ("default/ext", "prod/dns", 53, Udp, Allow, "every namespace, default too"),
        ("prod/web", "prod/batch", 3868, Sctp, Allow, "ipBlock 10.1.0.0/16 holds 10.1.1.2; SCTP port by name"),
        ("default/ext", "prod/batch", 3868, Sctp, Deny, "192.168.5.10 is outside the ipBlock"),
        ("prod/web", "prod/batch", 3868, Tcp, Deny, "the named port is SCTP"),
    ]);
}

#[test]
fn egress_isolation_and_defaults() {
    check(&[
        ("dev/client", "prod/web", 9100, Tcp, Deny, "dev's pods may leave on TCP 80 and UDP 53 only"),
        ("dev/client", "prod/dns", 53, Tcp, Deny, "egress opens UDP 53, not TCP"),
        ("dev/client", "prod/batch", 3868, Sctp, Deny, "egress has no SCTP; the ipBlock excepts dev's subnet too"),
        ("dev/client", "default/ext", 8080, Tcp, Deny, "8080 is not an egress port"),
        ("dev/client", "default/ext", 80, Tcp, Allow, "NotIn [dev] holds for a namespace without the env label"),
        ("prod/web", "dev/client", 80, Tcp, Allow, "dev's policy is Egress only: its pods are open for ingress"),
        ("monitoring/prom", "default/ext", 8080, Tcp, Allow, "egress [{}] allows everything"),
        (
            "prod/web",
            "monitoring/prom",
            9090,
            Tcp,
            Deny,
            "no policyTypes + egress rules = Ingress and Egress; no ingress rules",
        ),
        ("prod/web", "default/ext", 8080, Tcp, Allow, "neither side is isolated"),
    ]);
}

/// One manifest per refusal class: one line naming the file, the document's
/// index and the field's path, and why (goldens in tests/bad/*.err).
#[test]
fn bad_manifests_are_refused_with_the_document_and_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "{cases:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&case).unwrap();
        let err = imgbuild_policy::parse_manifests(&text, name).expect_err(name).to_string();
        assert!(!err.contains('\n'), "{name}: {err}");
        // The document and field when the error is in one; the file's own
        // problems (size, nesting) name the file only.
        assert!(err.starts_with(&format!("{name}: documents[")) || name == "deep-nesting.yaml", "{name}: {err}");
        testkit::assert_golden(
            &case.with_extension(format!("{}.err", case.extension().unwrap().to_str().unwrap())),
            &format!("{err}\n"),
        );
    }
}
