//! Loading the kernel modules the builder listed, in its order, and
//! waiting for PID 1's background load of the pod network's modules.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use node_config::layout::{POD_MODULES_DONE, POD_MODULE_LIST};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// Loads every module named (relative to `dir`) in `list`, in order; returns
/// how many were loaded. A module already loaded or built in is not an error.
pub fn load_module_list(list: &Path, dir: &Path) -> Result<usize> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", list.display())),
    };
    let mut loaded = 0;
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if load_file(&dir.join(rel))? {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Loads one module file; false when it was already loaded.
pub fn load_file(path: &Path) -> Result<bool> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match finit_module(&f, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("loading {}", path.display())),
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
