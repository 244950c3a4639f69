//! flannel's wire format and subnet logic; the only place that knows it.

pub mod alloc;
pub mod config;
pub mod guard;
pub mod lease;
pub mod manager;

pub use config::Network;
pub use lease::{BackendData, Lease, LeaseAttrs};
