//! imgbuild: from one cluster file, everything needed to boot each node.

pub mod accel;
pub mod agent;
pub mod build;
pub mod cluster;
pub mod cmdline;
pub mod commands;
pub mod error;
pub mod etcd;
pub mod etcd_admin;
pub mod formats;
pub mod image;
pub mod output;
pub mod pki;
pub mod plan;
pub mod policy;
pub mod serve;
pub mod sources;
#[cfg(test)]
mod testutil;
pub mod timing;
pub mod token;
pub mod ui;
pub mod up;
