//! Kernel knobs the node needs: modules (when not built in) and sysctls;
//! and whether the kernel says it is tainted.

use std::path::Path;
use std::process::Command;

use crate::log;

/// Loads `name` unless the kernel has it already (loaded or built in: both
/// show in /sys/module). A failure is a warning: the step that needs the
/// feature reports clearly if it is truly missing.
pub fn ensure_module(name: &str) {
    if Path::new("/sys/module").join(name).exists() {
        return;
    }
    match Command::new("modprobe").arg(name).output() {
        Ok(o) if o.status.success() => log::debug(&format!("loaded module {name}")),
        Ok(o) => log::warn(&format!("modprobe {name}: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => log::warn(&format!("modprobe {name}: {e}")),
    }
}

/// Writes a sysctl under `proc_sys` (`net/ipv4/ip_forward` → `…/net/ipv4/ip_forward`).
pub fn set_sysctl(proc_sys: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let path = proc_sys.join(key);
    std::fs::write(&path, value).map_err(|e| anyhow::anyhow!("setting {}: {e}", path.display()))
}

/// The kernel's taint flags in bit order (letter as oops reports print it,
/// meaning), from Documentation/admin-guide/tainted-kernels.rst.
const TAINTS: [(char, &str); 19] = [
    ('P', "proprietary module"),
    ('F', "module force-loaded"),
    ('S', "out-of-spec system"),
    ('R', "module force-unloaded"),
    ('M', "machine check"),
    ('B', "bad page"),
    ('U', "taint requested by userspace"),
    ('D', "kernel oops"),
    ('A', "ACPI table overridden"),
    ('W', "kernel warning"),
    ('C', "staging driver"),
    ('I', "firmware workaround"),
    ('O', "out-of-tree module"),
    ('E', "unsigned module"),
    ('L', "soft lockup"),
    ('K', "live patched"),
    ('X', "auxiliary taint"),
    ('T', "built with struct randomization"),
    ('N', "in-kernel test"),
];

/// What a `/proc/sys/kernel/tainted` mask means, e.g. "W (kernel warning)";
/// `None` for an untainted kernel.
pub fn describe_taint(mask: u64) -> Option<String> {
    if mask == 0 {
        return None;
    }
    let known: Vec<String> = TAINTS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, (l, what))| format!("{l} ({what})"))
        .collect();
    Some(if known.is_empty() { format!("{mask:#x}") } else { known.join(", ") })
}

/// In the image the kernel and its modules are ours: a taint (a WARN, an
/// unsigned module) is a bug worth a line on the console, where `dmesg` may
/// not be at hand.
pub fn warn_if_tainted(proc_sys: &Path) {
    let path = proc_sys.join("kernel/tainted");
    let mask = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0);
    if let Some(what) = describe_taint(mask) {
        log::warn(&format!("the kernel is tainted: {what}; its log (dmesg) says why"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_masks_read_as_the_kernel_prints_them() {
        assert_eq!(describe_taint(0), None);
        assert_eq!(describe_taint(512).as_deref(), Some("W (kernel warning)"));
        assert_eq!(describe_taint(512 | 8192).as_deref(), Some("W (kernel warning), E (unsigned module)"));
        assert_eq!(describe_taint(1 << 40).as_deref(), Some("0x10000000000"));
    }
}
