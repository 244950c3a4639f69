//! Links, addresses, routes, neighbours and FDB entries over rtnetlink.
//! One module per kind; each call's doc gives the `ip`/`bridge` command it
//! equals. Everything acts on the network namespace the agent runs in.

mod addr;
mod fdb;
mod link;
mod neigh;
mod route;

use anyhow::{Context, Result};

pub use link::{LinkInfo, VxlanSpec};
pub use route::Route;

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }
}

/// Whether a netlink error means "no such entry" (deleting what is gone).
fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.raw_code() == -libc::ENOENT || m.raw_code() == -libc::ESRCH || m.raw_code() == -libc::ENODEV)
}
