//! Power-off and reboot as PID 1: the kernel sends init SIGINT for
//! Ctrl-Alt-Del (once `reboot(CAD_OFF)` is set); SIGTERM asks for a reboot
//! and SIGUSR2 or SIGPWR for a power-off, as other inits take them.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

static REQUEST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    // Only an atomic store: async-signal-safe.
    REQUEST.store(sig, Ordering::SeqCst);
}

/// Installs the handlers (without SA_RESTART, so `waitpid` returns EINTR).
pub fn install() {
    let _ = set_cad_enabled(false);
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR2, Signal::SIGPWR] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// The mode a pending request asks for, if any.
pub fn pending() -> Option<RebootMode> {
    match REQUEST.load(Ordering::SeqCst) {
        0 => None,
        s if s == Signal::SIGUSR2 as i32 || s == Signal::SIGPWR as i32 => Some(RebootMode::RB_POWER_OFF),
        _ => Some(RebootMode::RB_AUTOBOOT),
    }
}

/// Stops every process, syncs, and powers off or reboots. Never returns.
pub fn shutdown(mode: RebootMode) -> ! {
    let what = if mode == RebootMode::RB_POWER_OFF { "powering off" } else { "rebooting" };
    crate::log::info(&format!("{what}: stopping all processes"));
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    std::thread::sleep(Duration::from_secs(2));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    crate::log::info(what);
    let _ = reboot(mode);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
