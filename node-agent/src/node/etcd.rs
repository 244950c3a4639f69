//! Running etcd on etcd nodes of the image: a supervised child with a static
//! initial cluster, restarted with backoff when it exits.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{EtcdMember, Paths};
use crate::etcd::Client;
use crate::log;
pub use node_config::etcd::{args, ClusterState, TlsFiles};

/// Writes the member's CA, certificate and key where etcd reads them:
/// a directory only root may enter, files only root may read.
pub fn write_tls(dir: &Path, ca: &str, cert: &str, key: &str) -> Result<TlsFiles> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let files = TlsFiles::in_dir(dir);
    for (path, text) in [(&files.ca, ca), (&files.cert, cert), (&files.key, key)] {
        crate::cni::write_private(path, text)?;
    }
    Ok(files)
}

/// How this member starts, asked of the other members (`others`) when it
/// has no data yet: nobody answers, so the static initial cluster is being
/// bootstrapped (`new`); or the running cluster lists this member's peer
/// URL without a name, so it was added (`etcd add`) and joins (`existing`).
/// A running cluster that does not list it, or lists it as started (its
/// data is gone), is an administrator's call: the error says which.
pub async fn cluster_state(m: &EtcdMember, paths: &Paths, others: Option<&Client>) -> Result<ClusterState, String> {
    let Some(others) = others.filter(|_| !paths.etcd_data_dir.join("member").exists()) else {
        return Ok(ClusterState::New);
    };
    let Ok(members) = others.members().await else { return Ok(ClusterState::New) };
    match members.iter().find(|member| member.peer_urls.contains(&m.peer_url)) {
        Some(member) if member.name.is_empty() => Ok(ClusterState::Existing),
        Some(_) if members.len() == 1 => Ok(ClusterState::New),
        Some(_) => Err(format!(
            "the running cluster lists member {} as started, but its data is gone: run `imgbuild etcd remove {}` and `imgbuild etcd add {}`",
            m.name, m.name, m.name
        )),
        None => Err(format!("{} is not a member of the running cluster: run `imgbuild etcd add {}`", m.name, m.name)),
    }
}

/// Starts etcd and keeps it running for ever. `ca` is the cluster CA when
/// the member has a certificate; `others` reach the other members.
pub async fn supervise(m: EtcdMember, ca: Option<String>, paths: Paths, others: Option<Client>) {
    let tls = match (&m.tls, &ca) {
        (Some(pair), Some(ca)) => match write_tls(&paths.state_dir.join("etcd-tls"), ca, &pair.cert, &pair.key) {
            Ok(files) => Some(files),
            Err(e) => {
                // Without its certificate etcd would serve nobody; say so and stop here.
                log::error(&format!("etcd member {}: {e:#}; not starting etcd", m.name));
                return std::future::pending().await;
            }
        },
        _ => None,
    };
    let state = loop {
        match cluster_state(&m, &paths, others.as_ref()).await {
            Ok(s) => break s,
            Err(why) => log::warn(&format!("etcd member {}: {why}; asking again in 10s", m.name)),
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    };
    if state == ClusterState::Existing {
        log::info(&format!("etcd member {} joins the running cluster", m.name));
    }
    let mut argv = vec![paths.etcd_bin.display().to_string()];
    argv.extend(args(&m, &paths, tls.as_ref(), state));
    crate::process::supervise::forever(&format!("etcd member {}", m.name), &argv, &paths.state_dir.join("etcd.log"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tls_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etcd-tls");
        let files = write_tls(&dir, "CA", "CERT", "KEY").unwrap();
        assert_eq!(std::fs::read_to_string(&files.key).unwrap(), "KEY");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        for f in [&files.ca, &files.cert, &files.key] {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
    }
}
