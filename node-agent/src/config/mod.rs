//! The node config (its types and rules live in the `node-config` crate,
//! shared with the builder), and how the agent finds it at boot.

pub mod cloud;
pub mod cmdline;
pub mod drive;
pub mod providers;

/// Everything `r` gives, or `None` when that is more than `limit` bytes:
/// what a config source reads from a server or a drive, never unbounded.
pub fn read_at_most(r: impl std::io::Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

pub use cmdline::Cmdline;
pub use node_config::{
    Backend, BackendType, ClientTls, ConfigError, EtcdConfig, EtcdMember, Guest, KeyPair, NetworkConfig, NodeConfig,
    NodeIdentity, Paths, Service,
};
