//! Where the cluster keeps what in etcd: flannel's layout, and ours beside it.

/// flannel's network config.
pub const NETWORK_CONFIG: &str = "/coreos.com/network/config";
/// flannel's subnet leases, one key per subnet.
pub const SUBNETS: &str = "/coreos.com/network/subnets/";
/// Each node's probe pod address, by subnet.
pub const PROBES: &str = "/imgbuild/probe/v1/";
/// NetworkPolicy: policies, namespaces, pod labels and endpoints.
pub const POLICY: &str = "/imgbuild/policy/v1/";

/// The folder of `node`'s policy endpoints.
pub fn endpoints_of(node: &str) -> String {
    format!("{POLICY}endpoints/{node}/")
}
