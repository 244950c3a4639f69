use super::*;
use crate::testutil::{assert_golden, tests_dir};

#[test]
fn default_is_the_reference_cluster() {
    let c = Cluster::embedded_default();
    let nodes: Vec<(&str, Role, String)> =
        c.nodes.iter().map(|n| (n.name.as_str(), n.role, n.static_ip().to_string())).collect();
    assert_eq!(
        nodes,
        [
            ("etcd-1", Role::Etcd, "172.17.8.101".to_string()),
            ("master-1", Role::Master, "172.17.8.102".to_string()),
            ("worker-1", Role::Worker, "172.17.8.103".to_string()),
            ("worker-2", Role::Worker, "172.17.8.104".to_string()),
        ]
    );
    assert_eq!(c.node_network.to_string(), "172.17.8.0/24");
    assert_eq!(c.pod_network.to_string(), "10.1.0.0/16");
    assert_eq!(c.subnet_len, 24);
    assert_eq!((c.backend.kind, c.backend.vni, c.backend.port), (node_config::BackendType::Vxlan, 1, 8472));
    assert_eq!(c.etcd_endpoints(), ["https://172.17.8.101:2379"]);
    assert!(c.etcd.tls, "etcd uses TLS unless the file says otherwise");
}

#[test]
fn init_output_is_golden_and_round_trips() {
    let file = parse_file(DEFAULT_TOML, DEFAULT_ORIGIN).unwrap();
    let text = Cluster::embedded_default().to_toml(&file);
    assert_golden("golden/cluster.toml", &text);
    // Spelled-out MACs are the derived ones, so the file means the same cluster.
    assert_eq!(parse(&text, "cluster.toml").unwrap(), Cluster::embedded_default());
}

#[test]
fn derived_macs_are_stable_and_unicast() {
    assert_eq!(derived_mac("worker-1"), derived_mac("worker-1"));
    assert_ne!(derived_mac("worker-1"), derived_mac("worker-2"));
    assert!(derived_mac("worker-1").is_unicast());
}

/// Every file in tests/bad-clusters is refused with the message in its
/// `.err` twin: one line naming the file, the field and the reason.
#[test]
fn bad_clusters_are_refused_with_golden_errors() {
    let dir = tests_dir().join("bad-clusters");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "bad-input corpus went missing");
    for path in cases {
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse(&text, name).expect_err(name);
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{name}: error is not one line: {msg}");
        assert!(msg.starts_with(&format!("{name}: ")), "{name}: error does not name the file: {msg}");
        assert_golden(&format!("bad-clusters/{}", name.replace(".toml", ".err")), &format!("{msg}\n"));
    }
}

/// `[images] containerd`: on unless the file says false; a value that is
/// not a boolean is refused naming the field.
#[test]
fn containerd_is_on_unless_turned_off() {
    assert!(Cluster::embedded_default().containerd);
    let off = DEFAULT_TOML.replace("[artifacts]", "[images]\ncontainerd = false\n\n[artifacts]");
    assert!(!parse(&off, "c.toml").unwrap().containerd);
    let bad = DEFAULT_TOML.replace("[artifacts]", "[images]\ncontainerd = \"yes\"\n\n[artifacts]");
    let msg = format!("{:#}", parse(&bad, "c.toml").unwrap_err());
    assert!(msg.starts_with("c.toml: ") && msg.contains("images.containerd"), "{msg}");
}

/// `[images] drivers` for every node, a node's own `drivers` over it.
#[test]
fn drivers_per_cluster_and_per_node() {
    let text = DEFAULT_TOML.replace("[artifacts]", "[images]\ndrivers = \"cloud\"\n\n[artifacts]").replace(
        "name = \"worker-2\"\nrole = \"worker\"\nip = \"172.17.8.104\"",
        "name = \"worker-2\"\nrole = \"worker\"\nip = \"172.17.8.104\"\ndrivers = [\"e1000e\", \"nvme\"]",
    );
    let c = parse(&text, "c.toml").unwrap();
    let d: Vec<_> = c.nodes.iter().map(|n| (n.drivers.clone(), n.drivers_field.as_str())).collect();
    assert_eq!(d[0], (Drivers::Set(DriverSet::Cloud), "images.drivers"));
    assert_eq!(d[3], (Drivers::Modules(vec!["e1000e".into(), "nvme".into()]), "node[3].drivers"));
    assert!(Cluster::embedded_default().nodes.iter().all(|n| n.drivers == Drivers::Set(DriverSet::Virtio)));
}
