//! From a validated cluster to per-node plans: which nodes to build and the
//! node config each agent gets. Pure.

use ipnet::Ipv4Net;
use node_config::Role;
use node_config::{
    ClientTls, EtcdAccess, EtcdConfig, EtcdMember, KeyPair, NetworkConfig, NodeConfig, NodeIdentity, Paths,
};

use crate::cluster::{Cluster, Node};
use crate::error::InputError;
use crate::pki::{Pem, Pki};

/// Which nodes a build covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub role: Option<Role>,
    pub node: Option<String>,
    /// Every node of the cluster.
    pub all: bool,
}

/// Everything the renderers need for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub node: Node,
    pub config: NodeConfig,
}

/// Plans the selected nodes, in cluster-file order. `pki` is the cluster CA,
/// required when the cluster's etcd uses TLS.
pub fn plan(cluster: &Cluster, sel: &Selection, pki: Option<&Pki>) -> Result<Vec<NodePlan>, InputError> {
    let nodes = select(cluster, sel)?;
    let pki = match (cluster.etcd.tls, pki) {
        (true, None) => panic!("a TLS cluster is planned with its CA"),
        (tls, pki) => pki.filter(|_| tls),
    };
    Ok(nodes.into_iter().map(|n| NodePlan { node: n.clone(), config: node_config(cluster, n, pki) }).collect())
}

/// The nodes `sel` picks, or why it picks none: checked before anything is
/// written (such as a new CA), so a bad `--node` leaves nothing behind.
pub fn select<'a>(cluster: &'a Cluster, sel: &Selection) -> Result<Vec<&'a Node>, InputError> {
    if let Some(name) = &sel.node {
        let node = cluster.node(name).ok_or_else(|| {
            let known: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            InputError::new(
                "--node",
                "",
                format!("no node named {name:?} in the cluster (nodes: {})", known.join(", ")),
            )
        })?;
        if let Some(role) = sel.role.filter(|r| *r != node.role) {
            return Err(InputError::new("--node", "", format!("node {name} has role {}, not {role}", node.role)));
        }
        return Ok(vec![node]);
    }
    if sel.all {
        return Ok(cluster.nodes.iter().collect());
    }
    let role = sel
        .role
        .ok_or_else(|| InputError::new("command line", "", "say what to build: --role ROLE, --node NAME or --all"))?;
    let nodes: Vec<&Node> = cluster.nodes.iter().filter(|n| n.role == role).collect();
    if nodes.is_empty() {
        return Err(InputError::new("--role", "", format!("the cluster has no {role} nodes")));
    }
    Ok(nodes)
}

/// The config one node's agent runs from; with `pki`, it carries the node's
/// own certificates and nobody else's.
pub fn node_config(cluster: &Cluster, node: &Node, pki: Option<&Pki>) -> NodeConfig {
    // Validation allows etcd nodes only without external endpoints.
    let is_member = node.role == Role::Etcd;
    let certs = pki.map(|p| p.issue(node, is_member));
    let mut member = is_member.then(|| etcd_member(cluster, node));
    if let (Some(m), Some(pem)) = (member.as_mut(), certs.as_ref().and_then(|c| c.member.as_ref())) {
        m.tls = Some(key_pair(pem));
    }
    NodeConfig {
        cluster: cluster.name.clone(),
        node: NodeIdentity {
            name: node.name.clone(),
            role: node.role,
            // None with DHCP: the agent fills in the address the node holds.
            address: node
                .ip
                .map(|ip| Ipv4Net::new(ip, cluster.node_network.prefix_len()).expect("validated prefix"))
                .unwrap_or_default(),
            mac: node.mac,
            net: node.net.clone(),
        },
        etcd: EtcdConfig {
            endpoints: cluster.etcd_endpoints(),
            // With client certificates, etcd's users are their CNs: the
            // members make them and turn authentication on.
            access: (is_member && certs.is_some()).then(|| etcd_access(cluster)),
            tls: certs.map(|c| ClientTls { ca: c.ca, cert: c.client.cert, key: c.client.key }),
            member,
        },
        network: NetworkConfig {
            network: cluster.pod_network,
            subnet_len: cluster.subnet_len,
            subnet_min: cluster.subnet_min,
            subnet_max: cluster.subnet_max,
            backend: cluster.backend,
            lease_ttl: None,
            enable_nftables: cluster.enable_nftables,
        },
        paths: Paths::default(),
        guest: None,
        containerd: None,
        policy: (node.role.has_pods() && cluster.network_policy).then(node_config::PolicyEnforcement::default),
    }
}

/// Every certificate name of the cluster and what it may do in etcd.
pub fn etcd_access(cluster: &Cluster) -> EtcdAccess {
    let admins = cluster.etcd_nodes().map(|n| n.name.clone()).chain([crate::pki::ADMIN_CN.to_owned()]).collect();
    let nodes = cluster.nodes.iter().filter(|n| n.role.has_pods()).map(|n| n.name.clone()).collect();
    EtcdAccess { admins, nodes }
}

fn key_pair(pem: &Pem) -> KeyPair {
    KeyPair { cert: pem.cert.clone(), key: pem.key.clone() }
}

fn etcd_member(cluster: &Cluster, node: &Node) -> EtcdMember {
    let scheme = cluster.etcd.scheme();
    let peer = |n: &Node| format!("{scheme}://{}:{}", n.static_ip(), cluster.etcd.peer_port);
    EtcdMember {
        name: node.name.clone(),
        client_url: format!("{scheme}://{}:{}", node.static_ip(), cluster.etcd.client_port),
        peer_url: peer(node),
        initial_cluster: cluster.etcd_nodes().map(|n| format!("{}={}", n.name, peer(n))).collect(),
        initial_cluster_token: cluster.name.clone(),
        supervise: false,
        tls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plans: &[NodePlan]) -> Vec<&str> {
        plans.iter().map(|p| p.node.name.as_str()).collect()
    }

    #[test]
    fn selects_by_role_and_node() {
        let c = Cluster::embedded_default();
        let sel = |role, node: Option<&str>| Selection { role, node: node.map(str::to_owned), all: false };
        let pki = crate::pki::test_pki();
        let plan = |c: &Cluster, s: &Selection| plan(c, s, Some(&pki));
        assert_eq!(names(&plan(&c, &sel(Some(Role::Worker), None)).unwrap()), ["worker-1", "worker-2"]);
        assert_eq!(names(&plan(&c, &sel(None, Some("master-1"))).unwrap()), ["master-1"]);
        assert_eq!(names(&plan(&c, &sel(Some(Role::Worker), Some("worker-2"))).unwrap()), ["worker-2"]);
        let e = plan(&c, &sel(Some(Role::Etcd), Some("worker-2"))).unwrap_err();
        assert_eq!(e.to_string(), "--node: node worker-2 has role worker, not etcd");
        let e = plan(&c, &sel(None, Some("nope"))).unwrap_err();
        assert!(e.to_string().contains("no node named \"nope\""), "{e}");
        assert!(plan(&c, &sel(None, None)).is_err());
    }

    #[test]
    fn etcd_member_lists_every_member() {
        let c = Cluster::embedded_default();
        let sel = Selection { role: Some(Role::Etcd), ..Default::default() };
        let etcd = &plan(&c, &sel, Some(&crate::pki::test_pki())).unwrap()[0].config;
        let m = etcd.etcd.member.as_ref().unwrap();
        assert_eq!(m.initial_cluster, ["etcd-1=https://172.17.8.101:2380"]);
        assert_eq!(etcd.etcd.endpoints, ["https://172.17.8.101:2379"]);
        assert!(m.tls.is_some() && etcd.etcd.tls.is_some());
        etcd.validate().unwrap();
    }

    #[test]
    fn each_node_carries_only_its_own_keys() {
        let pki = crate::pki::test_pki();
        let plans = plan(&Cluster::embedded_default(), &Selection { all: true, ..Default::default() }, Some(&pki));
        let plans = plans.unwrap();
        let keys: Vec<String> = plans
            .iter()
            .flat_map(|p| {
                let e = &p.config.etcd;
                e.tls
                    .iter()
                    .map(|t| t.key.clone())
                    .chain(e.member.iter().flat_map(|m| m.tls.iter().map(|t| t.key.clone())))
            })
            .collect();
        assert_eq!(keys.len(), 5, "four agents and one member");
        for p in &plans {
            let text = serde_json::to_string(&p.config).unwrap();
            let own = keys.iter().filter(|k| text.contains(&k.replace('\n', "\\n"))).count();
            assert_eq!(own, if p.node.role == Role::Etcd { 2 } else { 1 }, "{}", p.node.name);
        }
    }

    #[test]
    fn a_plain_cluster_has_no_certificates_and_speaks_http() {
        let text = crate::cluster::DEFAULT_TOML.replace("tls = true", "tls = false");
        let c = crate::cluster::parse(&text, "c.toml").unwrap();
        let plans = plan(&c, &Selection { all: true, ..Default::default() }, None).unwrap();
        for p in &plans {
            assert!(p.config.etcd.tls.is_none());
            assert!(p.config.etcd.endpoints.iter().all(|e| e.starts_with("http://")));
            p.config.validate().unwrap();
        }
    }
}
