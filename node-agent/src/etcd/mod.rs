//! The etcd v3 client (gRPC, `imgbuild-etcd`): KV, transactions, leases,
//! watches and the cluster's users. No flannel knowledge lives there.

pub use imgbuild_etcd::*;
