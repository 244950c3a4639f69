//! The node agent as a library: the node config type the builder writes and
//! the agent reads, and everything the agent does at first boot.

pub mod config;
pub mod pid1;
pub mod types;
