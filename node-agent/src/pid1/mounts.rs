//! The filesystems PID 1 mounts before anything else runs.

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// (source, target, fstype, flags, data)
const EARLY: [(&str, &str, &str, u64, &str); 7] = [
    ("proc", "/proc", "proc", 0, ""),
    ("sysfs", "/sys", "sysfs", 0, ""),
    ("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755"),
    // Terminals for an SSH server's sessions (Vagrant boxes).
    ("devpts", "/dev/pts", "devpts", 0, "mode=0620,ptmxmode=0666"),
    ("tmpfs", "/run", "tmpfs", 0, "mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", 0, "mode=1777"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""),
];

pub fn early() -> Result<()> {
    for (src, target, fstype, flags, data) in EARLY {
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        let flags = MsFlags::from_bits_truncate(flags) | MsFlags::MS_NOSUID;
        let data = (!data.is_empty()).then_some(data);
        mount(Some(src), target, Some(fstype), flags, data)
            .with_context(|| format!("mounting {fstype} on {target}"))?;
    }
    Ok(())
}
