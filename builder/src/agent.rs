//! Finding the static node-agent binary that images and configs carry.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::image::elf;

/// The environment variable that overrides where the agent is found.
pub const AGENT_ENV: &str = "IMGBUILD_AGENT";

/// The agent's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl AgentBinary {
    /// `--agent`, else `$IMGBUILD_AGENT`, else `node-agent` beside this
    /// executable (where `cargo build` puts both).
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => match std::env::var_os(AGENT_ENV).filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => sibling()?,
            },
        };
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading the node agent {} (build it with `cargo build --release`, or pass --agent)",
                path.display()
            )
        })?;
        elf::ensure_static(&bytes, &format!("node agent {}", path.display()))?;
        Ok(AgentBinary { path: path.to_owned(), bytes })
    }
}

fn sibling() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding imgbuild's own path")?;
    let dir = me.parent().context("imgbuild has no parent directory")?;
    // Integration tests run from target/<profile>/deps; the agent is one up.
    let candidates = [dir.join("node-agent"), dir.join("../node-agent")];
    Ok(candidates.iter().find(|p| p.is_file()).unwrap_or(&candidates[0]).clone())
}
