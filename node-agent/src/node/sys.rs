//! Kernel knobs the node needs: modules (when not built in) and sysctls.

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
