//! Running etcd on etcd nodes of the image: a supervised child with a static
//! initial cluster, restarted with backoff when it exits.

use crate::config::{EtcdMember, Paths};

/// etcd's command line for this member.
pub fn args(m: &EtcdMember, paths: &Paths) -> Vec<String> {
    vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", paths.etcd_data_dir.display()),
        format!("--listen-client-urls={},http://127.0.0.1:2379", m.client_url),
        format!("--advertise-client-urls={}", m.client_url),
        format!("--listen-peer-urls={}", m.peer_url),
        format!("--initial-advertise-peer-urls={}", m.peer_url),
        format!("--initial-cluster={}", m.initial_cluster.join(",")),
        format!("--initial-cluster-token={}", m.initial_cluster_token),
        "--initial-cluster-state=new".into(),
        "--enable-v2=false".into(),
    ]
}

/// Starts etcd and keeps it running for ever.
pub async fn supervise(m: EtcdMember, paths: Paths) {
    let mut argv = vec![paths.etcd_bin.display().to_string()];
    argv.extend(args(&m, &paths));
    super::supervise::forever(&format!("etcd member {}", m.name), &argv, &paths.state_dir.join("etcd.log")).await
}
