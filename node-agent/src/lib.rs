//! The node agent as a library: the node config type the builder writes and
//! the agent reads, and everything the agent does at first boot.

pub mod backend;
pub mod boot;
pub mod cli;
pub mod cni;
pub mod coldplug;
pub mod commands;
pub mod config;
pub mod etcd;
pub mod failpoint;
pub mod flannel;
pub mod kmod;
pub mod log;
pub mod netlink;
pub mod node;
pub mod pause;
pub mod pid1;
pub mod policy;
pub mod probe;
pub mod process;
pub mod runtime;
pub use node_config::types;
