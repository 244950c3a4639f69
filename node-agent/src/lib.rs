//! The node agent as a library: the node config type the builder writes and
//! the agent reads, and everything the agent does at first boot.

pub mod backend;
pub mod cni;
pub mod config;
pub mod etcd;
pub mod failpoint;
pub mod flannel;
pub mod log;
pub mod netlink;
pub mod node;
pub mod pid1;
pub mod probe;
pub mod types;
