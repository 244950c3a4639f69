//! How an etcd member is run: the same command line for the image's
//! supervised etcd and for Flatcar's etcd-member.service.

use std::path::{Path, PathBuf};

use crate::{EtcdMember, Paths};

/// Where the member's TLS files are, as etcd's flags name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn in_dir(dir: &Path) -> Self {
        TlsFiles { ca: dir.join("ca.crt"), cert: dir.join("etcd.crt"), key: dir.join("etcd.key") }
    }
}

/// How a member with no data yet starts: bootstrapping the static initial
/// cluster, or joining a running one that already lists it (`etcd add`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// Every member certificate's CN (each is still named by its SANs). The
/// peer port admits only it: any other certificate from the cluster CA (a
/// node's client certificate) could otherwise speak raft to a member and
/// write whatever it likes, past etcd's authentication.
pub const MEMBER_CN: &str = "imgbuild:etcd-member";

/// etcd's command line for this member. With `tls`, clients and peers
/// must both present a certificate signed by the cluster CA, and peers a
/// member's.
pub fn args(m: &EtcdMember, paths: &Paths, tls: Option<&TlsFiles>, state: ClusterState) -> Vec<String> {
    let local = if tls.is_some() { "https://127.0.0.1:2379" } else { "http://127.0.0.1:2379" };
    let mut args = vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", paths.etcd_data_dir.display()),
        format!("--listen-client-urls={},{local}", m.client_url),
        format!("--advertise-client-urls={}", m.client_url),
        format!("--listen-peer-urls={}", m.peer_url),
        format!("--initial-advertise-peer-urls={}", m.peer_url),
        format!("--initial-cluster={}", m.initial_cluster.join(",")),
        format!("--initial-cluster-token={}", m.initial_cluster_token),
        format!("--initial-cluster-state={}", state.as_str()),
        "--enable-v2=false".into(),
    ];
    if let Some(t) = tls {
        let (ca, cert, key) = (t.ca.display(), t.cert.display(), t.key.display());
        args.extend([
            format!("--trusted-ca-file={ca}"),
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            "--client-cert-auth".into(),
            format!("--peer-trusted-ca-file={ca}"),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            "--peer-client-cert-auth".into(),
            format!("--peer-cert-allowed-cn={MEMBER_CN}"),
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(tls: bool) -> EtcdMember {
        let s = if tls { "https" } else { "http" };
        EtcdMember {
            name: "etcd-1".into(),
            client_url: format!("{s}://172.17.8.101:2379"),
            peer_url: format!("{s}://172.17.8.101:2380"),
            initial_cluster: vec![format!("etcd-1={s}://172.17.8.101:2380")],
            initial_cluster_token: "c".into(),
            supervise: true,
            tls: None,
        }
    }

    #[test]
    fn plain_member_listens_on_http_only() {
        let a = args(&member(false), &Paths::default(), None, ClusterState::New);
        assert!(a.contains(&"--listen-client-urls=http://172.17.8.101:2379,http://127.0.0.1:2379".to_owned()));
        assert!(!a.iter().any(|x| x.contains("cert")), "{a:?}");
    }

    #[test]
    fn tls_member_requires_client_certificates_from_clients_and_peers() {
        let files = TlsFiles::in_dir(Path::new("/run/tls"));
        let a = args(&member(true), &Paths::default(), Some(&files), ClusterState::Existing);
        for want in [
            "--listen-client-urls=https://172.17.8.101:2379,https://127.0.0.1:2379",
            "--trusted-ca-file=/run/tls/ca.crt",
            "--cert-file=/run/tls/etcd.crt",
            "--key-file=/run/tls/etcd.key",
            "--client-cert-auth",
            "--peer-trusted-ca-file=/run/tls/ca.crt",
            "--peer-cert-file=/run/tls/etcd.crt",
            "--peer-key-file=/run/tls/etcd.key",
            "--peer-client-cert-auth",
            "--peer-cert-allowed-cn=imgbuild:etcd-member",
            "--initial-cluster-state=existing",
        ] {
            assert!(a.contains(&want.to_owned()), "missing {want} in {a:?}");
        }
    }
}
