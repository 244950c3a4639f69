//! The etcd v3 client: KV, transactions, leases and watches. No flannel
//! knowledge lives here.

mod client;
pub mod wire;

pub use client::{prefix_end, Client, Watch};
