use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every filesystem location the agent touches, in one value so tests can
/// point all of them into a temp dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// Where `subnet.env` goes (flannel's `/run/flannel`).
    pub run_flannel: PathBuf,
    /// Where the CNI conflist goes.
    pub cni_conf_dir: PathBuf,
    /// Where kubelet finds the CNI plugins.
    pub cni_bin_dir: PathBuf,
    /// host-local IPAM's state (the conflist's `dataDir`).
    pub cni_ipam_dir: PathBuf,
    /// The iptables command (its `-restore` sibling is used too).
    pub iptables: PathBuf,
    /// State kept across restarts (the VTEP MAC).
    pub state_dir: PathBuf,
    /// The etcd binary the agent supervises on etcd nodes.
    pub etcd_bin: PathBuf,
    /// Where etcd keeps its data on etcd nodes.
    pub etcd_data_dir: PathBuf,
    /// The kernel command line.
    pub proc_cmdline: PathBuf,
    /// Root of `/proc/sys`, for sysctls.
    pub proc_sys: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            run_flannel: "/run/flannel".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_ipam_dir: "/var/lib/cni/networks".into(),
            iptables: "iptables".into(),
            state_dir: "/var/lib/node-agent".into(),
            etcd_bin: "/usr/bin/etcd".into(),
            etcd_data_dir: "/var/lib/etcd".into(),
            proc_cmdline: "/proc/cmdline".into(),
            proc_sys: "/proc/sys".into(),
        }
    }
}
