//! Which accelerator `imgbuild up` gives QEMU: KVM where it really boots a
//! kernel, TCG otherwise. Opening `/dev/kvm` is not enough: on some hosts
//! (nested virtualization without the CPU features a kernel needs) a KVM
//! guest hangs right after the firmware, so the probe boots the node's own
//! kernel to its first panic under KVM, bounded in time, and kills it if
//! it has not got there.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a KVM boot to the kernel's first panic may take. Under KVM it
/// takes a fraction of a second; a loaded host that misses it only loses
/// speed (TCG), never a working boot.
pub const PROBE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator and why: `IMGBUILD_ACCEL=kvm|tcg` decides outright;
/// otherwise the probe.
pub fn choose(kernel: &Path) -> (Accel, String) {
    match std::env::var("IMGBUILD_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, "IMGBUILD_ACCEL=kvm".into()),
        Ok("tcg") => return (Accel::Tcg, "IMGBUILD_ACCEL=tcg".into()),
        _ => {}
    }
    match probe(kernel, PROBE_LIMIT) {
        Ok(took) => (Accel::Kvm, format!("KVM booted a kernel in {:.2}s", took.as_secs_f64())),
        Err(why) => (Accel::Tcg, why),
    }
}

/// Boots `kernel` with no initramfs under KVM: it panics at once for want
/// of a root file system, and with `panic=-1` and `-no-reboot` QEMU exits.
/// Ok with the time taken, or why KVM is not used.
pub fn probe(kernel: &Path, limit: Duration) -> Result<Duration, String> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Err(format!("no usable /dev/kvm ({e})"));
    }
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "128", "-smp", "1", "-no-reboot", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-nodefaults"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/nonexistent"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64 ({e})"))?;
    let mut console = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = console.by_ref().take(1 << 20).read_to_end(&mut text);
        text
    });
    let exited = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let took = start.elapsed();
    if exited.is_none() {
        // A guest stuck in KVM_RUN dies with its process.
        let _ = child.kill();
        let _ = child.wait();
        let _ = reader.join();
        return Err(format!("KVM did not boot a kernel within {}s", limit.as_secs_f64()));
    }
    let text = reader.join().unwrap_or_default();
    if String::from_utf8_lossy(&text).contains("Kernel panic") {
        Ok(took)
    } else {
        Err("KVM's test boot ended without reaching the kernel".into())
    }
}
