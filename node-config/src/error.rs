//! Errors a caller branches on: a config that is wrong (the user's to fix,
//! exit status 2) is a different type from one that cannot be read.

use std::path::PathBuf;

/// One refused value: the field's path in the config and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Problem {
    pub field: String,
    pub reason: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem { field: field.into(), reason: reason.into() }
    }
}

/// Why a node config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: the machine's problem, not the config's.
    #[error("reading node config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config says something the agent refuses: bad input.
    #[error("node config {origin}")]
    Invalid {
        origin: String,
        #[source]
        problem: Problem,
    },
}

impl ConfigError {
    /// Whether the config itself is at fault (exit status 2).
    pub fn is_invalid(&self) -> bool {
        matches!(self, ConfigError::Invalid { .. })
    }
}
