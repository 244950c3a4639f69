//! Kubelet's side of pod networking: flannel's `subnet.env`, the CNI
//! conflist for the standard plugins, and the forward/masquerade rules
//! (iptables, or nftables when the network config says `EnableNFTables`).
//! Files are built as values; `write_atomic` writes them in one step.

mod conflist;
pub mod exec;
pub mod nft;
mod rules;
mod subnet_env;

use std::path::Path;

use anyhow::{Context, Result};

pub use conflist::{Conflist, BRIDGE, CONFLIST_NAME, NETWORK_NAME};
pub use rules::Rules;
pub use subnet_env::SubnetEnv;

/// Writes via a temp file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    write_atomic_mode(path, text, 0o666)
}

/// As [`write_atomic`], readable by the owner only (keys).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    write_atomic_mode(path, text, 0o600)
}

/// `mode` is the temp file's creation mode (the umask applies), so the
/// file is never readable more widely than asked, not even for a moment.
/// The temp file has a random name and is created new (`O_EXCL`): nothing
/// planted in the folder is followed or overwritten.
fn write_atomic_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut f = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", f.path().display()))?;
    f.persist(path).map_err(|e| e.error).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
