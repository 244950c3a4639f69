//! Being PID 1 of the image: early mounts, module loading, the hostname,
//! reaping orphans, and never exiting. Nothing here runs under systemd.

pub mod dhcp;
pub mod guest;
mod modules;
mod mounts;
pub mod net;
pub mod shutdown;

use std::path::Path;
use std::time::Duration;

pub use modules::load_module_list;

/// Where the image keeps the module load list the builder wrote.
pub const MODULE_LIST: &str = "/etc/node-agent/modules";
/// Modules only the pod network needs (overlay, netfilter, bridge), loaded
/// in the background (see [`pod_modules_loaded`]).
pub const POD_MODULE_LIST: &str = "/etc/node-agent/modules.pods";
/// Written when the background modules are loaded (or failed to).
pub const POD_MODULES_DONE: &str = "/run/node-agent/pod-modules.done";

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
    log(&format!("starting the node process uptime={} cpu={}", crate::node::uptime(), crate::node::cpu()));
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
    log(&format!("PID 1 starting uptime={} cpu={}", crate::node::uptime(), crate::node::cpu()));
    if let Err(e) = mounted {
        log(&format!("warning: early mounts: {e:#}"));
    }
    let release = kernel_release();
    log(&format!("kernel {release}"));
    match load_module_list(Path::new(MODULE_LIST), &Path::new("/lib/modules").join(release)) {
        Ok(n) => log(&format!("loaded {n} kernel modules uptime={} cpu={}", crate::node::uptime(), crate::node::cpu())),
        Err(e) => log(&format!("warning: loading modules: {e:#}")),
    }
    shutdown::install();
}

fn load_pod_modules() {
    let dir = Path::new("/lib/modules").join(kernel_release());
    let outcome = match load_module_list(Path::new(POD_MODULE_LIST), &dir) {
        Ok(n) => format!("loaded {n} pod modules uptime={} cpu={}", crate::node::uptime(), crate::node::cpu()),
        Err(e) => format!("warning: loading pod modules: {e:#}"),
    };
    log(&outcome);
    let done = Path::new(POD_MODULES_DONE);
    let written = done.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(done, &outcome));
    if let Err(e) = written {
        log(&format!("warning: writing {}: {e}", done.display()));
    }
}

/// Waits (up to `limit`) until PID 1 has loaded the pod modules; at once
/// when the image has none.
pub async fn pod_modules_loaded(limit: Duration) {
    if !Path::new(POD_MODULE_LIST).exists() {
        return;
    }
    let start = std::time::Instant::now();
    while !Path::new(POD_MODULES_DONE).exists() {
        if start.elapsed() > limit {
            crate::log::warn("the pod modules are still loading; going on");
            return;
        }
        // The overlay waits on this: poll often (cheap, and only at boot).
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    let mut sup = Supervisor { worker: spawn_worker(), delay: Duration::from_secs(1) };
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
    delay: Duration,
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
                    log(&format!("error: the node process {how}; restarting in {}s", self.delay.as_secs()));
                    std::thread::sleep(self.delay);
                    self.delay = (self.delay * 2).min(Duration::from_secs(30));
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
