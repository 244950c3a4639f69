//! The node config (its types and rules live in the `node-config` crate,
//! shared with the builder), and how the agent finds it at boot.

pub mod cloud;
pub mod cmdline;
pub mod drive;
pub mod providers;

pub use cmdline::Cmdline;
pub use node_config::{
    Backend, BackendType, ClientTls, ConfigError, EtcdConfig, EtcdMember, Guest, KeyPair, NetworkConfig, NodeConfig,
    NodeIdentity, Paths, Service,
};
