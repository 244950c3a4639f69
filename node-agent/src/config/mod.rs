//! The node config: everything one node's agent needs, written by `imgbuild`
//! as `/etc/node-agent/config.json` (or embedded in the image).

mod node;
mod paths;
pub mod providers;

pub use node::{
    Backend, BackendType, ClientTls, EtcdConfig, EtcdMember, Guest, KeyPair, NetworkConfig, NodeConfig, NodeIdentity,
    Service,
};
pub use paths::Paths;
