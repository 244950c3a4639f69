//! Running and keeping processes: the node process's runtime and panic
//! policy, children kept alive with backoff, and retrying until the
//! cluster is there. Leaf module: it knows nothing of nodes or networks.

pub mod backoff;
pub mod retry;
pub mod supervise;

use anyhow::{Context, Result};

use crate::log;

pub use backoff::Backoff;

/// The tokio runtime the node's work runs on (`node-agent run`, the
/// image's node process, and the first-request benchmark).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")
}

/// A panic in any task or thread ends the node process at once, so its
/// supervisor (PID 1 in the image, systemd on Container Linux) restarts it
/// whole: a task that died quietly would leave a node that looks alive but
/// no longer renews its lease or follows its peers.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        log::error(&format!("{info}; the node process exits so that it is restarted whole"));
        std::process::abort();
    }));
}
