//! A node's data on an attached disk in the image (etcd's on etcd nodes,
//! containerd's images and snapshots on nodes with pods): the first disk
//! is used when it holds ext4, formatted when it is blank, and left alone
//! (data stays in RAM, with a warning) when it holds anything else.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::log;

/// The EFI disk's data partition first, then a whole plain data disk:
/// virtio, SCSI/SATA/SAS, NVMe, Xen.
const CANDIDATES: [&str; 12] = [
    "/dev/vda2",
    "/dev/sda2",
    "/dev/nvme0n1p2",
    "/dev/xvda2",
    "/dev/vda",
    "/dev/vdb",
    "/dev/sda",
    "/dev/sdb",
    "/dev/nvme0n1",
    "/dev/nvme1n1",
    "/dev/xvda",
    "/dev/xvdb",
];

/// How long a disk controller that is there may take to show its disk
/// (NVMe probes its namespaces after the driver loads).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether an NVMe controller is there without a namespace yet.
fn disks_pending() -> bool {
    let controllers = std::fs::read_dir("/sys/class/nvme").map(|d| d.count()).unwrap_or(0);
    let namespaces = std::fs::read_dir("/sys/class/block")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("nvme")).count())
        .unwrap_or(0);
    controllers > 0 && namespaces == 0
}

fn find_disk() -> Option<PathBuf> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        if let Some(dev) = CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()) {
            return Some(dev);
        }
        if !disks_pending() || std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What a disk's first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    Ext4,
    Blank,
    Other,
}

/// ext2/3/4 superblock magic 0xEF53 at byte 1080; "blank" is the first MiB zero.
pub fn inspect(dev: &Path) -> Result<Content> {
    let mut f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080))?;
    f.read_exact(&mut magic)?;
    if magic == [0x53, 0xef] {
        return Ok(Content::Ext4);
    }
    let mut head = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(0))?;
    let n = f.read(&mut head)?;
    Ok(if head[..n].iter().all(|b| *b == 0) { Content::Blank } else { Content::Other })
}

/// Mounts a data disk on `data_dir` if there is a usable one; returns it.
/// `what` names the data in logs and labels a disk formatted here.
pub fn prepare(data_dir: &Path, what: &str) -> Result<Option<PathBuf>> {
    let Some(dev) = find_disk() else {
        log::info(&format!("{what} data in memory (no data disk)"));
        return Ok(None);
    };
    match inspect(&dev)? {
        Content::Ext4 => {}
        Content::Blank => {
            log::info(&format!("formatting blank data disk {}", dev.display()));
            let out = Command::new("mke2fs")
                .args(["-q", "-t", "ext4", "-L", &format!("{what}-data")])
                .arg(&dev)
                .output()
                .context("running mke2fs")?;
            if !out.status.success() {
                bail!("mke2fs {}: {}", dev.display(), String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Content::Other => {
            log::warn(&format!(
                "{} holds something other than ext4; not touching it, {what} data in memory",
                dev.display()
            ));
            return Ok(None);
        }
    }
    std::fs::create_dir_all(data_dir)?;
    nix::mount::mount(Some(&dev), data_dir, Some("ext4"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting {} on {}", dev.display(), data_dir.display()))?;
    log::info(&format!("{what} data on {}", dev.display()));
    Ok(Some(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blank_ext4_and_other() {
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, vec![0u8; 2 << 20]).unwrap();
        assert_eq!(inspect(&blank).unwrap(), Content::Blank);
        let mut ext = vec![0u8; 2 << 20];
        ext[1080] = 0x53;
        ext[1081] = 0xef;
        let e = dir.path().join("ext");
        std::fs::write(&e, ext).unwrap();
        assert_eq!(inspect(&e).unwrap(), Content::Ext4);
        let mut other = vec![0u8; 2 << 20];
        other[510] = 0x55;
        let o = dir.path().join("other");
        std::fs::write(&o, other).unwrap();
        assert_eq!(inspect(&o).unwrap(), Content::Other);
    }
}
