//! OpenStack's config drive: a block device (disk, CD-ROM or partition)
//! whose ISO 9660 or FAT file system is labelled `config-2`, holding the
//! user data at `openstack/latest/user_data`. Found by reading each block
//! device's label from its superblock (no blkid in the image), then mounted
//! read-only just long enough to read that one file.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The label Nova and Ironic give the drive (FAT labels read upper case).
pub const LABEL: &str = "config-2";
/// Where the user data sits on the drive.
pub const USER_DATA: &str = "openstack/latest/user_data";

/// A file system's type, as `mount` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Iso9660,
    Vfat,
}

impl Fs {
    pub fn as_str(self) -> &'static str {
        match self {
            Fs::Iso9660 => "iso9660",
            Fs::Vfat => "vfat",
        }
    }
}

/// The label of an ISO 9660 (primary volume descriptor's volume id) or
/// FAT (the extended boot record's volume label) file system, if `dev`
/// holds one.
pub fn label(dev: &mut (impl Read + Seek)) -> Option<(Fs, String)> {
    let mut pvd = [0u8; 72];
    if dev.seek(SeekFrom::Start(0x8000)).is_ok() && dev.read_exact(&mut pvd).is_ok() && &pvd[..6] == b"\x01CD001" {
        return Some((Fs::Iso9660, text(&pvd[40..72])));
    }
    let mut boot = [0u8; 512];
    dev.seek(SeekFrom::Start(0)).ok()?;
    dev.read_exact(&mut boot).ok()?;
    if boot[510..] != [0x55, 0xAA] {
        return None;
    }
    // FAT32 keeps its extended record at 0x40, FAT12/16 at 0x24; each
    // names its type eight bytes after an 11-byte label.
    if &boot[0x52..0x57] == b"FAT32" && boot[0x42] == 0x29 {
        return Some((Fs::Vfat, text(&boot[0x47..0x52])));
    }
    if &boot[0x36..0x39] == b"FAT" && boot[0x26] == 0x29 {
        return Some((Fs::Vfat, text(&boot[0x2B..0x36])));
    }
    None
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_owned()
}

/// Block devices (whole disks and partitions) under `sys`/class/block, as
/// `/dev` paths, sorted.
fn block_devices(sys: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(sys.join("class/block"))
        .map(|d| d.flatten().map(|e| Path::new("/dev").join(e.file_name())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The config drive, if a block device carries its label.
pub fn find(sys: &Path) -> Option<(PathBuf, Fs)> {
    block_devices(sys).into_iter().find_map(|dev| {
        let (fs, l) = label(&mut std::fs::File::open(&dev).ok()?)?;
        l.eq_ignore_ascii_case(LABEL).then_some((dev, fs))
    })
}

/// Mounts the drive read-only on a fresh directory, reads the user data
/// (`None` when the drive has none), and unmounts.
pub fn user_data(dev: &Path, fs: Fs, limit: u64) -> Result<Option<Vec<u8>>> {
    use nix::mount::{mount, umount, MsFlags};
    let dir = tempfile::Builder::new().prefix("config-2-").tempdir().context("a mount point")?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some(dev), dir.path(), Some(fs.as_str()), flags, None::<&str>)
        .with_context(|| format!("mounting {} ({}) read-only", dev.display(), fs.as_str()))?;
    let read = read_user_data(dir.path(), limit);
    let _ = umount(dir.path());
    read
}

fn read_user_data(root: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    // A link on the drive (at any step) could point anywhere in our root:
    // each component must be what it says, never a link.
    let mut path = root.to_owned();
    let parts: Vec<&str> = USER_DATA.split('/').collect();
    let mut meta = None;
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {USER_DATA}")),
        };
        let last = i + 1 == parts.len();
        anyhow::ensure!(
            if last { m.is_file() } else { m.is_dir() },
            "{} on the config drive is not a regular {}",
            parts[..=i].join("/"),
            if last { "file" } else { "directory" }
        );
        meta = Some(m);
    }
    let meta = meta.context("an empty path")?;
    anyhow::ensure!(meta.len() <= limit, "{USER_DATA} is larger than the limit of {limit} bytes");
    let out = super::read_at_most(std::fs::File::open(&path)?, limit)?;
    Ok(Some(out.with_context(|| format!("{USER_DATA} is larger than the limit of {limit} bytes"))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn labels_of_iso_and_fat() {
        let mut iso = vec![0u8; 0x8000 + 2048];
        iso[0x8000..0x8006].copy_from_slice(b"\x01CD001");
        iso[0x8000 + 40..0x8000 + 48].copy_from_slice(b"config-2");
        iso[0x8000 + 48..0x8000 + 72].fill(b' ');
        assert_eq!(label(&mut Cursor::new(iso)), Some((Fs::Iso9660, "config-2".into())));
        let mut fat = vec![0u8; 4096];
        fat[510..512].copy_from_slice(&[0x55, 0xAA]);
        fat[0x26] = 0x29;
        fat[0x2B..0x36].copy_from_slice(b"CONFIG-2   ");
        fat[0x36..0x3E].copy_from_slice(b"FAT12   ");
        assert_eq!(label(&mut Cursor::new(fat)), Some((Fs::Vfat, "CONFIG-2".into())));
        assert_eq!(label(&mut Cursor::new(vec![0u8; 100])), None);
    }

    #[test]
    fn user_data_is_a_regular_file_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_user_data(d.path(), 10).unwrap(), None);
        std::os::unix::fs::symlink("/", d.path().join("openstack")).unwrap();
        assert!(read_user_data(d.path(), 10).unwrap_err().to_string().contains("openstack on the config drive"));
        std::fs::remove_file(d.path().join("openstack")).unwrap();
        std::fs::create_dir_all(d.path().join("openstack/latest")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join(USER_DATA)).unwrap();
        assert!(read_user_data(d.path(), 10).is_err());
        std::fs::remove_file(d.path().join(USER_DATA)).unwrap();
        std::fs::write(d.path().join(USER_DATA), "0123456789ab").unwrap();
        assert!(read_user_data(d.path(), 10).is_err());
        assert_eq!(read_user_data(d.path(), 12).unwrap().unwrap(), b"0123456789ab");
    }
}
