//! What etcd may not make a node do. The network config and every lease
//! are written by anyone holding a node certificate, so each value is
//! checked before it reaches the kernel: a network that would capture the
//! node's own traffic is refused, and a lease the kernel would refuse (or
//! that would send pod traffic somewhere no node can be) is skipped alone.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use ipnet::Ipv4Net;

use super::{BackendData, Lease, Network};
use crate::types::MacAddr;

pub use node_config::rules::{overlaps, special_range};

/// See [`node_config::rules::check_pod_network`]: the cluster file is held to the same rule.
pub fn check_pod_network(network: Ipv4Net, node_net: Ipv4Net) -> Result<()> {
    node_config::rules::check_pod_network(network, node_net).map_err(anyhow::Error::msg)
}

/// What the node's kernel already routes, and where etcd is: a network
/// config from etcd may take none of it over.
pub struct NodeView {
    pub node_net: Ipv4Net,
    /// Routes of the main table other than the default route and the pod
    /// network's own devices (`flannel.*`, the CNI bridge), with their device.
    pub routes: Vec<(Ipv4Net, String)>,
    /// etcd endpoints given by address.
    pub etcd: Vec<Ipv4Addr>,
}

/// Checks a network config read from etcd against this node.
pub fn check_network(net: &Network, view: &NodeView) -> Result<()> {
    check_pod_network(net.network, view.node_net)?;
    if let Some((dst, dev)) = view.routes.iter().find(|(dst, _)| overlaps(*dst, net.network)) {
        bail!("pod network {} overlaps the node's route to {dst} (dev {dev})", net.network);
    }
    if let Some(ip) = view.etcd.iter().find(|ip| net.network.contains(*ip)) {
        bail!("pod network {} holds etcd endpoint {ip}", net.network);
    }
    Ok(())
}

/// This node, as peers' leases are checked against it.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// The node address with the node network's prefix length.
    pub address: Ipv4Net,
    /// Our VTEP's MAC (VXLAN only).
    pub vtep_mac: Option<MacAddr>,
}

/// Why this node must not program a peer's `lease`, if it must not.
pub fn lease_problem(net: &Network, local: &Local, lease: &Lease) -> Option<String> {
    let ip = lease.attrs.public_ip;
    if let Some(what) = special_range(Ipv4Net::from(ip)) {
        return Some(format!("PublicIP {ip} is {what}"));
    }
    if net.network.contains(&ip) {
        return Some(format!("PublicIP {ip} lies in the pod network {}", net.network));
    }
    if ip == local.address.addr() {
        return Some(format!("PublicIP {ip} is this node's own address"));
    }
    let node_net = local.address.trunc();
    if node_net.prefix_len() < 31 && (ip == node_net.network() || ip == node_net.broadcast()) {
        return Some(format!("PublicIP {ip} is the node network's own or broadcast address"));
    }
    if let BackendData::Vxlan { vtep_mac, .. } = lease.attrs.backend {
        if vtep_mac.0 == [0; 6] {
            return Some(format!("VtepMAC {vtep_mac} is all zeros"));
        }
        if !vtep_mac.is_unicast() {
            return Some(format!("VtepMAC {vtep_mac} is not unicast"));
        }
        if Some(vtep_mac) == local.vtep_mac {
            return Some(format!("VtepMAC {vtep_mac} is this node's own"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flannel::LeaseAttrs;

    fn net(network: &str) -> Network {
        Network::parse(format!(r#"{{"Network":"{network}","Backend":{{"Type":"vxlan"}}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn a_vni_the_kernel_cannot_make_is_refused() {
        for vni in ["0", "16777216", "4294967296"] {
            let cfg = format!(r#"{{"Network":"10.1.0.0/16","Backend":{{"Type":"vxlan","VNI":{vni}}}}}"#);
            let e = Network::parse(cfg.as_bytes()).unwrap_err().to_string();
            assert_eq!(e, format!("network config: VNI {vni} is not 1 to 16777215"));
        }
    }

    fn view() -> NodeView {
        NodeView {
            node_net: "172.17.8.103/24".parse().unwrap(),
            routes: vec![("192.168.50.0/24".parse().unwrap(), "eth1".into())],
            etcd: vec!["172.17.8.101".parse().unwrap(), "10.99.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn a_network_may_not_take_over_the_nodes_own_traffic() {
        assert!(check_network(&net("10.1.0.0/16"), &view()).is_ok());
        let cases = [
            ("172.17.0.0/16", "pod network 172.17.0.0/16 overlaps the node network 172.17.8.0/24"),
            ("172.17.8.0/28", "pod network 172.17.8.0/28 overlaps the node network 172.17.8.0/24"),
            ("192.168.0.0/16", "pod network 192.168.0.0/16 overlaps the node's route to 192.168.50.0/24 (dev eth1)"),
            ("10.99.0.0/16", "pod network 10.99.0.0/16 holds etcd endpoint 10.99.0.1"),
            ("127.0.0.0/16", "pod network 127.0.0.0/16 overlaps loopback (127.0.0.0/8)"),
            ("224.0.0.0/16", "pod network 224.0.0.0/16 overlaps multicast (224.0.0.0/4)"),
            ("0.0.0.0/8", "pod network 0.0.0.0/8 overlaps \"this network\" (0.0.0.0/8)"),
            ("169.254.0.0/16", "pod network 169.254.0.0/16 overlaps link-local (169.254.0.0/16)"),
            ("0.0.0.0/1", "pod network 0.0.0.0/1 overlaps \"this network\" (0.0.0.0/8)"),
        ];
        for (network, want) in cases {
            assert_eq!(check_network(&net(network), &view()).unwrap_err().to_string(), want);
        }
    }

    fn lease(ip: &str, mac: &str) -> Lease {
        let backend = BackendData::Vxlan { vni: 1, vtep_mac: mac.parse().unwrap() };
        Lease {
            subnet: "10.1.5.0/24".parse().unwrap(),
            attrs: LeaseAttrs { public_ip: ip.parse().unwrap(), backend },
            etcd_lease: 0,
        }
    }

    #[test]
    fn leases_the_kernel_would_refuse_or_that_lead_nowhere_are_named() {
        let n = net("10.1.0.0/16");
        let local =
            Local { address: "172.17.8.103/24".parse().unwrap(), vtep_mac: Some("52:54:00:00:00:03".parse().unwrap()) };
        assert_eq!(lease_problem(&n, &local, &lease("172.17.8.104", "52:54:00:aa:bb:cc")), None);
        let cases = [
            ("0.0.0.0", "52:54:00:aa:bb:cc", "PublicIP 0.0.0.0 is \"this network\" (0.0.0.0/8)"),
            ("127.0.0.1", "52:54:00:aa:bb:cc", "PublicIP 127.0.0.1 is loopback (127.0.0.0/8)"),
            ("255.255.255.255", "52:54:00:aa:bb:cc", "PublicIP 255.255.255.255 is reserved (240.0.0.0/4)"),
            ("239.1.1.1", "52:54:00:aa:bb:cc", "PublicIP 239.1.1.1 is multicast (224.0.0.0/4)"),
            ("10.1.7.1", "52:54:00:aa:bb:cc", "PublicIP 10.1.7.1 lies in the pod network 10.1.0.0/16"),
            ("172.17.8.104", "00:00:00:00:00:00", "VtepMAC 00:00:00:00:00:00 is all zeros"),
            ("172.17.8.104", "ff:ff:ff:ff:ff:ff", "VtepMAC ff:ff:ff:ff:ff:ff is not unicast"),
            ("172.17.8.104", "01:00:5e:00:00:01", "VtepMAC 01:00:5e:00:00:01 is not unicast"),
            ("172.17.8.103", "52:54:00:aa:bb:cc", "PublicIP 172.17.8.103 is this node's own address"),
            (
                "172.17.8.255",
                "52:54:00:aa:bb:cc",
                "PublicIP 172.17.8.255 is the node network's own or broadcast address",
            ),
            ("172.17.8.0", "52:54:00:aa:bb:cc", "PublicIP 172.17.8.0 is the node network's own or broadcast address"),
            ("172.17.8.104", "52:54:00:00:00:03", "VtepMAC 52:54:00:00:00:03 is this node's own"),
        ];
        for (ip, mac, want) in cases {
            assert_eq!(lease_problem(&n, &local, &lease(ip, mac)).as_deref(), Some(want));
        }
    }
}
