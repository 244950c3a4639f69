//! Being PID 1 of the image: early mounts, module loading, the hostname,
//! reaping orphans, and never exiting. Nothing here runs under systemd.

mod modules;
mod mounts;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

pub use modules::load_module_list;

/// Where the image keeps the module load list the builder wrote.
pub const MODULE_LIST: &str = "/etc/node-agent/modules";

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// PID 1's whole life. `work` is the node's job (config, role tasks); it runs
/// on its own thread with panics caught, while this thread reaps children.
pub fn run(work: impl FnOnce() + Send + 'static) -> ! {
    log("PID 1 starting");
    if let Err(e) = mounts::early() {
        log(&format!("warning: early mounts: {e:#}"));
    }
    let release = kernel_release();
    log(&format!("kernel {release}"));
    match load_module_list(Path::new(MODULE_LIST), &Path::new("/lib/modules").join(release)) {
        Ok(n) => log(&format!("loaded {n} kernel modules")),
        Err(e) => log(&format!("warning: loading modules: {e:#}")),
    }
    std::thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            if catch_unwind(AssertUnwindSafe(work)).is_err() {
                log("error: the node task panicked; PID 1 keeps running");
            }
        })
        .map_err(|e| log(&format!("error: cannot start the node task: {e}")))
        .ok();
    reap_forever()
}

/// Orphans are re-parented to PID 1; collect them so they do not linger as zombies.
fn reap_forever() -> ! {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::empty())) {
            Ok(_) => {}
            // No children right now: wait for one to appear.
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn log(msg: &str) {
    crate::log::info(msg);
}
