//! A newc ("070701") cpio writer, as the kernel's initramfs unpacker reads it.
//!
//! The archive is a value: entries are collected, then written sorted by
//! path with parents first, inode numbers renumbered from 1, a fixed mtime
//! and uid/gid 0, so the same tree always gives the same bytes.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// What one path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: Node,
    mode: u32,
}

/// An archive under construction, keyed by path without a leading `/`.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` at `path` with permission bits `mode`, creating parent
    /// directories (0755) as needed. Adding the same path twice is an error
    /// unless both are directories.
    pub fn add(&mut self, path: &str, mode: u32, node: Node) -> Result<()> {
        let path = normalize(path)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add(parent, 0o755, Node::Dir)?;
        }
        match self.entries.get(&path) {
            Some(e) if e.node == Node::Dir && node == Node::Dir => Ok(()),
            Some(_) => bail!("{path} is added twice to the initramfs"),
            None => {
                self.entries.insert(path, Entry { node, mode: mode & 0o7777 });
                Ok(())
            }
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, bytes: Vec<u8>) -> Result<()> {
        self.add(path, mode, Node::File(bytes))
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.add(path, 0o755, Node::Dir)
    }

    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The total size of file contents, before compression.
    pub fn payload_bytes(&self) -> usize {
        self.entries.values().map(|e| if let Node::File(b) = &e.node { b.len() } else { 0 }).sum()
    }

    /// Writes the archive. BTreeMap order puts every parent before its children.
    pub fn write(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_bytes() + self.entries.len() * 160);
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (kind, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &e.node {
                Node::Dir => (S_IFDIR, &[], 2, (0, 0)),
                Node::File(b) => (S_IFREG, b, 1, (0, 0)),
                Node::Symlink(t) => (S_IFLNK, t.as_bytes(), 1, (0, 0)),
                Node::CharDev(maj, min) => (S_IFCHR, &[], 1, (*maj, *min)),
            };
            let h = Header { ino: ino as u32 + 1, mode: kind | e.mode, nlink, mtime, size: data.len() as u32, rdev };
            write_entry(&mut out, &h, path, data);
        }
        let trailer = Header { ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, rdev: (0, 0) };
        write_entry(&mut out, &trailer, TRAILER, &[]);
        out
    }
}

/// One entry as [`read`] finds it: path, permission bits, what it is.
pub type ReadEntry = (String, u32, Node);

/// Reads a newc archive back (the writer's inverse, for tests and fuzzing):
/// every entry up to the trailer. Refuses anything malformed, never panics.
pub fn read(bytes: &[u8]) -> Result<Vec<ReadEntry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let header = bytes.get(at..at + 110).ok_or_else(|| anyhow::anyhow!("truncated header at {at}"))?;
        if &header[..6] != b"070701" {
            bail!("bad magic at {at}");
        }
        let field = |i: usize| -> Result<u32> {
            let hex = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])?;
            Ok(u32::from_str_radix(hex, 16)?)
        };
        let (mode, size, rdev, namesize) =
            (field(1)?, field(6)? as usize, (field(9)?, field(10)?), field(11)? as usize);
        if namesize == 0 {
            bail!("empty name at {at}");
        }
        let name_end = at.checked_add(110 + namesize).ok_or_else(|| anyhow::anyhow!("name too long"))?;
        let name = bytes.get(at + 110..name_end - 1).ok_or_else(|| anyhow::anyhow!("truncated name at {at}"))?;
        let name = std::str::from_utf8(name)?.to_owned();
        let data_at = align4(name_end);
        let data_end = data_at.checked_add(size).ok_or_else(|| anyhow::anyhow!("size too large"))?;
        let data = bytes.get(data_at..data_end).ok_or_else(|| anyhow::anyhow!("truncated data of {name}"))?;
        at = align4(data_end);
        if name == TRAILER {
            return Ok(out);
        }
        let node = match mode & 0o170000 {
            S_IFDIR => Node::Dir,
            S_IFREG => Node::File(data.to_vec()),
            S_IFLNK => Node::Symlink(String::from_utf8(data.to_vec())?),
            S_IFCHR => Node::CharDev(rdev.0, rdev.1),
            other => bail!("{name}: unsupported file type {other:o}"),
        };
        out.push((name, mode & 0o7777, node));
    }
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl Archive {
    /// Every entry in archive order, as [`read`] returns them.
    pub fn entries(&self) -> Vec<ReadEntry> {
        self.entries.iter().map(|(p, e)| (p.clone(), e.mode, e.node.clone())).collect()
    }
}

/// The name that ends a newc archive: an entry called this would end it early.
const TRAILER: &str = "TRAILER!!!";

/// `a//b/./c/` → `a/b/c`; refuses `..`, the empty path, a NUL (names end at
/// one, so the kernel would read a shorter name) and the trailer's name.
fn normalize(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        bail!("{path:?} is not a path inside the initramfs");
    }
    if path.contains('\0') {
        bail!("{path:?}: a NUL cannot be in an initramfs path");
    }
    let path = parts.join("/");
    if path == TRAILER {
        bail!("{path:?} is the name that ends a cpio archive; it cannot be an initramfs path");
    }
    Ok(path)
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

fn write_entry(out: &mut Vec<u8>, h: &Header, name: &str, data: &[u8]) {
    // c_magic, then 13 eight-digit hex fields; uid, gid and dev numbers are 0.
    let fields = [h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0, h.rdev.0, h.rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"#!agent".to_vec()).unwrap();
        a.file("etc/node-agent/config.json", 0o600, b"{}\n".to_vec()).unwrap();
        a.add("dev/console", 0o600, Node::CharDev(5, 1)).unwrap();
        a.add("bin/sh", 0o777, Node::Symlink("/init".into())).unwrap();
        a.dir("proc").unwrap();
        a
    }

    #[test]
    fn golden_bytes() {
        let bytes = sample().write(0);
        // The first header: `bin`, a directory, inode 1, mode 040755, nlink 2.
        let first = std::str::from_utf8(&bytes[..110]).unwrap();
        let want = ["070701", "00000001", "000041ed", "00000000", "00000000", "00000002", "00000000", "00000000"]
            .concat()
            + &["00000000", "00000000", "00000000", "00000000", "00000004", "00000000"].concat();
        assert_eq!(first, want);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::testutil::assert_golden("golden/cpio/sample.hex", &format!("{hex}\n"));
    }

    #[test]
    fn read_inverts_write_and_refuses_garbage() {
        let a = sample();
        assert_eq!(read(&a.write(7)).unwrap(), a.entries());
        let bytes = a.write(7);
        assert!(read(&bytes[..bytes.len() - 200]).is_err());
        assert!(read(b"070701zz").is_err() && read(b"").is_err());
    }

    #[test]
    fn parents_are_implied_and_duplicates_refused() {
        let mut a = sample();
        assert!(a.contains("etc") && a.contains("/etc/node-agent"));
        assert!(a.file("init", 0o644, vec![]).is_err());
        assert!(a.file("../x", 0o644, vec![]).is_err());
        a.dir("etc").unwrap();
        // Found by fuzzing: a parent named like the trailer ended the archive
        // early, and a NUL would cut the name short.
        let err = a.file("TRAILER!!!/x", 0o644, vec![]).unwrap_err().to_string();
        assert!(err.contains("ends a cpio archive"), "{err}");
        assert!(a.file("a\0b", 0o644, vec![]).is_err());
        assert!(!a.entries().iter().any(|(p, ..)| p == "TRAILER!!!" || p.contains('\0')));
        a.file("x/TRAILER!!!", 0o644, vec![]).unwrap();
    }

    fn gnu_cpio(args: &[&str], dir: &std::path::Path, input: &[u8]) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio is installed (tests/install-deps.sh)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GNU cpio reads what we write: names, modes, sizes and device numbers.
    #[test]
    fn gnu_cpio_lists_and_extracts_it() {
        let bytes = sample().write(1_700_000_000);
        let tmp = tempfile::tempdir().unwrap();
        let listing = gnu_cpio(&["-t", "-v", "--quiet"], tmp.path(), &bytes);
        for want in ["lrwxrwxrwx", "crw-------", "5,   1", "-rwxr-xr-x", "-rw-------", "bin/sh -> /init"] {
            assert!(listing.contains(want), "{want} missing in:\n{listing}");
        }
        let names: Vec<&str> = listing.lines().map(|l| l.split(' ').next_back().unwrap()).collect();
        assert!(names.iter().position(|n| *n == "etc") < names.iter().position(|n| n.starts_with("etc/node-agent")));
        gnu_cpio(&["-i", "-d", "--no-absolute-filenames", "--quiet"], tmp.path(), &bytes);
        assert_eq!(std::fs::read(tmp.path().join("init")).unwrap(), b"#!agent");
        assert_eq!(std::fs::read(tmp.path().join("etc/node-agent/config.json")).unwrap(), b"{}\n");
        assert_eq!(std::fs::read_link(tmp.path().join("bin/sh")).unwrap().to_str(), Some("/init"));
    }
}
