//! Running etcd on etcd nodes of the image: a supervised child with a static
//! initial cluster, restarted with backoff when it exits.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{EtcdMember, Paths};
use crate::log;
pub use node_config::etcd::{args, TlsFiles};

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

/// Starts etcd and keeps it running for ever. `ca` is the cluster CA when
/// the member has a certificate.
pub async fn supervise(m: EtcdMember, ca: Option<String>, paths: Paths) {
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
    let mut argv = vec![paths.etcd_bin.display().to_string()];
    argv.extend(args(&m, &paths, tls.as_ref()));
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
