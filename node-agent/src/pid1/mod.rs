//! PID 1 of the image, and only that: early mounts, the boot module list,
//! device drivers by coldplug (and hotplug after),
//! the pod modules in the background, then supervising the node process
//! (`boot`, restarted with backoff) while reaping orphans, and never
//! exiting. The node's own work runs in that child, never here.

mod drivers;
mod mounts;
pub mod shutdown;

use std::path::Path;
use std::time::Duration;

use crate::kmod::load_module_list;
use crate::process::Backoff;

pub use node_config::layout::{MODULE_LIST, POD_MODULES_DONE, POD_MODULE_LIST};

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// PID 1's whole life: early setup, then the node's work as a child
/// process (`/init boot`) restarted whenever it exits, while this process
/// reaps every orphan. Keeping the work out of PID 1 means its own
/// `wait()`s never race the reaper, and a crash never takes the node down.
pub fn run() -> ! {
    // The kernel starts init with no PATH; children (iptables, etcd) need one.
    // Still single-threaded here, so setting the environment is sound.
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    if std::panic::catch_unwind(early_setup).is_err() {
        log("error: PID 1's early setup panicked; starting the node process anyway");
    }
    log(&format!("starting the node process uptime={} cpu={}", crate::log::uptime(), crate::log::cpu()));
    // While the node process reaches etcd: it needs these only once it has
    // a lease, and waits for them then. Images without pods have none.
    if Path::new(POD_MODULE_LIST).exists() {
        std::thread::spawn(load_pod_modules);
    }
    supervise_forever()
}

fn early_setup() {
    let mounted = mounts::early();
    // After the mounts: /proc tells the uptime.
    // cpu= here is the kernel's own boot (initcalls run as PID 1 before
    // /init): the agent's part is what PID 1 adds after this line.
    log(&format!("PID 1 starting uptime={} cpu={}", crate::log::uptime(), crate::log::cpu()));
    if let Err(e) = mounted {
        log(&format!("warning: early mounts: {e:#}"));
    }
    let release = kernel_release();
    log(&format!("kernel {release}"));
    match load_module_list(Path::new(MODULE_LIST), &Path::new("/lib/modules").join(&release)) {
        Ok(n) => log(&format!("loaded {n} kernel modules uptime={} cpu={}", crate::log::uptime(), crate::log::cpu())),
        Err(e) => log(&format!("warning: loading modules: {e:#}")),
    }
    drivers::start(&release);
    shutdown::install();
}

fn load_pod_modules() {
    let dir = Path::new("/lib/modules").join(kernel_release());
    let outcome = match load_module_list(Path::new(POD_MODULE_LIST), &dir) {
        Ok(n) => format!("loaded {n} pod modules uptime={} cpu={}", crate::log::uptime(), crate::log::cpu()),
        Err(e) => format!("warning: loading pod modules: {e:#}"),
    };
    log(&outcome);
    let done = Path::new(POD_MODULES_DONE);
    let written = done.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(done, &outcome));
    if let Err(e) = written {
        log(&format!("warning: writing {}: {e}", done.display()));
    }
}

fn spawn_worker() -> Option<u32> {
    match std::process::Command::new("/proc/self/exe").arg("boot").spawn() {
        Ok(child) => Some(child.id()),
        Err(e) => {
            log(&format!("error: cannot start the node process: {e}"));
            None
        }
    }
}

/// Reaps children; restarts the node process (with backoff) when it ends.
/// A panic here is caught and the loop goes on: PID 1 exiting would panic
/// the kernel.
fn supervise_forever() -> ! {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut sup = Supervisor { worker: spawn_worker(), backoff };
    loop {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sup.step())) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(&format!("error: PID 1 recovered from a panic ({what}); still supervising"));
        }
    }
}

struct Supervisor {
    worker: Option<u32>,
    backoff: Backoff,
}

static PID1_FAILPOINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Supervisor {
    /// One reaped child (or one retry to start the node process).
    fn step(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        use nix::unistd::Pid;
        if let Some(mode) = shutdown::pending() {
            shutdown::shutdown(mode);
        }
        if crate::failpoint::once_per_process("panic-in-pid1", &PID1_FAILPOINT) {
            panic!("failpoint panic-in-pid1");
        }
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::empty())) {
            Ok(status) => {
                let pid = status.pid().map(|p| p.as_raw() as u32);
                if pid.is_some() && pid == self.worker {
                    let how = match status {
                        WaitStatus::Exited(_, code) => format!("exited with {code}"),
                        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
                        other => format!("{other:?}"),
                    };
                    let delay = self.backoff.next_delay();
                    log(&format!("error: the node process {how}; restarting in {}s", delay.as_secs()));
                    std::thread::sleep(delay);
                    self.worker = spawn_worker();
                }
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(500));
                if self.worker.is_none() {
                    self.worker = spawn_worker();
                }
            }
        }
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn log(msg: &str) {
    crate::log::info(msg);
}
