//! Kubelet's side of pod networking: flannel's `subnet.env`, the CNI
//! conflist for the standard plugins, and the forward/masquerade rules.
//! Files are built as values; `write_atomic` writes them in one step.

mod conflist;
pub mod exec;
mod rules;
mod subnet_env;

use std::path::Path;

use anyhow::{Context, Result};

pub use conflist::{Conflist, CONFLIST_NAME, NETWORK_NAME};
pub use rules::Rules;
pub use subnet_env::SubnetEnv;

/// Writes via a temp file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}
