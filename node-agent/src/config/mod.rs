//! The node config: everything one node's agent needs, written by `imgbuild`
//! as `/etc/node-agent/config.json` (or embedded in the image).

pub mod cmdline;
mod node;
mod paths;
pub mod providers;

pub use cmdline::Cmdline;
pub use node::{
    is_http_url, Backend, BackendType, ClientTls, EtcdConfig, EtcdMember, Guest, KeyPair, NetworkConfig, NodeConfig,
    NodeIdentity, Service, VNI_RANGE,
};
pub use paths::Paths;
