//! The digest-addressed cache: downloaded blobs under `blobs/SHA256`, and
//! packages unpacked once under `trees/SHA256/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub const CACHE_ENV: &str = "IMGBUILD_CACHE";

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `$IMGBUILD_CACHE`, else `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild`.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = env(CACHE_ENV)
            .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("imgbuild")))
            .or_else(|| env("HOME").map(|p| p.join(".cache/imgbuild")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/imgbuild"));
        Cache { root }
    }

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    pub fn blob(&self, sha256: &[u8; 32]) -> PathBuf {
        self.root.join("blobs").join(hex::encode(sha256))
    }

    /// An unpacked package or archive. (`unpacked/`: trees unpacked
    /// in-process, links kept inside; older `trees/` are not trusted.)
    pub fn tree(&self, sha256: &[u8; 32]) -> PathBuf {
        self.root.join("unpacked").join(hex::encode(sha256))
    }

    /// Bytes derived from inputs whose digest is `key` (such as the agent
    /// compressed for Ignition): made once, then read back on warm builds.
    pub fn derived(&self, key: &[u8; 32], make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        let path = self.root.join("derived").join(hex::encode(key));
        if let Ok(bytes) = std::fs::read(&path) {
            return Ok(bytes);
        }
        let bytes = make();
        let tmp = self.scratch()?;
        let file = tmp.path().join("derived");
        std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
        self.commit(&file, &path)?;
        Ok(bytes)
    }

    /// A scratch dir inside the cache, so a finished file can be renamed in.
    pub fn scratch(&self) -> Result<tempfile::TempDir> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
        tempfile::tempdir_in(&dir).with_context(|| format!("creating a temp dir in {}", dir.display()))
    }

    /// Moves a finished file or dir to `dest` (another writer may have won).
    pub fn commit(&self, tmp: &Path, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest.parent().expect("cache paths have parents"))?;
        if dest.exists() {
            return Ok(());
        }
        std::fs::rename(tmp, dest).with_context(|| format!("moving {} into the cache", dest.display()))
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().into())
}
