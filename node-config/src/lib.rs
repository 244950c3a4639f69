//! The contract between `imgbuild` and `node-agent`, in one place: the node
//! config the builder writes and the agent reads, where the image keeps
//! things, the backend and role names, and every rule both sides enforce
//! (so a value the cluster file refuses is refused in a node config too).
//!
//! This crate has no I/O beyond reading a config file, and no async: the
//! builder uses it without compiling the agent.

pub mod containerd;
pub mod error;
pub mod etcd;
pub mod layout;
mod node;
mod paths;
pub mod rules;
pub mod types;

pub use containerd::Containerd;
pub use error::{ConfigError, Problem};
pub use node::{
    Backend, BackendType, ClientTls, EtcdAccess, EtcdConfig, EtcdMember, Guest, KeyPair, NetworkConfig, NodeConfig,
    NodeIdentity, NodeNet, PolicyEnforcement, Service,
};
pub use paths::Paths;
pub use types::{MacAddr, Role};
