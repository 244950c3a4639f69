//! `node-agent pause`: a pod sandbox's infra process, as Kubernetes' pause
//! container does it. It holds the pod's namespaces by living; as PID 1 of
//! the sandbox it reaps orphans; SIGTERM or SIGINT ends it with status 0
//! (the runtime stops sandboxes with SIGTERM), anything else is ignored.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Never returns: exits 0 on SIGTERM or SIGINT.
pub fn run() -> ! {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    // Blocked and taken synchronously: no handler, no race with a reap.
    if set.thread_block().is_err() {
        std::process::exit(1);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            Ok(Signal::SIGCHLD) => reap(),
            _ => {}
        }
    }
}

/// Every child that has ended (orphans re-parented to us).
fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
