//! etcd for imgbuild's agents and administrator: a small v3 gRPC client
//! ([`Client`]), the keys the cluster uses ([`keys`]), and the users and
//! roles that give each node only what it owns ([`access`]).

pub mod access;
mod client;
pub mod keys;
pub mod pb;

pub use client::{prefix_end, Client, Watch, MAX_ANSWER};
pub use pb::{KeyValue, Member, WatchResponse};
