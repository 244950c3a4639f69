//! The node config: everything one node's agent needs, written by `imgbuild`
//! as `/etc/node-agent/config.json` (or embedded in the image).

mod node;
mod paths;
pub mod providers;

pub use node::{Backend, BackendType, EtcdConfig, EtcdMember, Guest, NetworkConfig, NodeConfig, NodeIdentity, Service};
pub use paths::Paths;
