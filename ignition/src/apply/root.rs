//! A directory that a config is applied under, and that no path in the
//! config can leave. Every lookup goes through `openat2(RESOLVE_IN_ROOT)`:
//! links are followed as if the directory were `/` (as Ignition follows
//! them in the real root), so neither `..` nor an absolute or relative link,
//! whoever made it, leads out. The last component of an entry is never
//! followed: it is created under a temporary name of its own and renamed
//! over whatever was there, so a link at that path is replaced, not written
//! through.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as fs, AtFlags, Mode, OFlags, ResolveFlags};

/// A config path cleaned as Ignition cleans it (Go's `filepath.Join` onto
/// the root): its components below the root, `..` stopping at the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(Vec<String>);

impl RelPath {
    pub fn new(path: &str) -> Self {
        let mut parts: Vec<String> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p.to_owned()),
            }
        }
        RelPath(parts)
    }

    pub fn depth(&self) -> usize {
        self.0.len()
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent's components and the last one (`None` for the root).
    fn split(&self) -> Option<(&[String], &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((parent, last))
    }

    fn joined(parts: &[String]) -> String {
        if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        }
    }

    pub fn child(&self, name: &str) -> RelPath {
        let mut parts = self.0.clone();
        parts.push(name.to_owned());
        RelPath(parts)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// An open root directory.
pub struct Root {
    fd: OwnedFd,
}

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
const DIR: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC);

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        Ok(Root { fd: fs::open(path, DIR | OFlags::NOFOLLOW, Mode::empty())? })
    }

    /// The directory at `parts`, resolved inside the root; made (0755, as
    /// Ignition makes missing parents) where `create` says so, also where a
    /// link points at a directory that does not exist yet.
    fn dir(&self, parts: &[String], create: bool) -> io::Result<OwnedFd> {
        self.dir_following(parts, create, 0)
    }

    fn dir_following(&self, parts: &[String], create: bool, links: u32) -> io::Result<OwnedFd> {
        let rel = RelPath::joined(parts);
        match fs::openat2(&self.fd, &rel, DIR, Mode::empty(), IN_ROOT) {
            Err(e) if e == rustix::io::Errno::NOENT && create && !parts.is_empty() => {
                let (last, up) = parts.split_last().expect("not the root");
                let parent = self.dir_following(up, true, links)?;
                match fs::mkdirat(&parent, last.as_str(), Mode::from_raw_mode(0o755)) {
                    Err(e) if e == rustix::io::Errno::EXIST => self.make_link_target(&parent, up, last, links)?,
                    r => r?,
                }
                Ok(fs::openat2(&self.fd, &rel, DIR, Mode::empty(), IN_ROOT)?)
            }
            r => Ok(r?),
        }
    }

    /// Where `name` in `parent` (at `up`) is a dangling link, makes the
    /// directory it names, taken inside the root. The kernel's own lookup
    /// decides afterwards whether that is where the link leads.
    fn make_link_target(&self, parent: &OwnedFd, up: &[String], name: &str, links: u32) -> io::Result<()> {
        let Ok(target) = fs::readlinkat(parent, name, Vec::new()) else { return Ok(()) };
        if links >= 40 {
            return Err(rustix::io::Errno::LOOP.into());
        }
        let target = target.to_string_lossy();
        let resolved = if target.starts_with('/') {
            RelPath::new(&target)
        } else {
            RelPath::new(&format!("{}/{target}", RelPath::joined(up)))
        };
        self.dir_following(&resolved.0, true, links + 1).map(drop)
    }

    /// The parent directory of `path` (made if missing) and its last component.
    fn parent<'p>(&self, path: &'p RelPath, create: bool) -> io::Result<(OwnedFd, &'p str)> {
        let (parent, name) = path.split().ok_or_else(|| refused("the root itself is not an entry"))?;
        Ok((self.dir(parent, create)?, name))
    }

    /// Writes a file at `path`: `fill` writes its contents into a new file
    /// that then replaces whatever was at `path` (a link is replaced, never
    /// followed). The mode is set on the open file, unaffected by the umask.
    pub fn write_file(
        &self,
        path: &RelPath,
        mode: u32,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let (dir, name) = self.parent(path, true)?;
        let tmp = temp_name(name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = File::from(fs::openat(&dir, tmp.as_str(), flags, Mode::from_raw_mode(0o600))?);
        let written = fill(&mut file)
            .and_then(|()| Ok(fs::fchmod(&file, Mode::from_raw_mode(mode))?))
            .and_then(|()| Ok(fs::renameat(&dir, tmp.as_str(), &dir, name)?));
        if written.is_err() {
            let _ = fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Makes the directory at `path` (and its parents) and gives it `mode`.
    /// A link at `path` is refused, not followed; the root is never changed.
    pub fn create_dir(&self, path: &RelPath, mode: u32) -> io::Result<()> {
        let (parent, name) = self.parent(path, true)?;
        match fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::EXIST => {}
            Err(e) => return Err(e.into()),
        }
        self.chmod_dir(&parent, name, mode)
    }

    /// Sets the mode of the directory `name` in `parent`, not through a link.
    fn chmod_dir(&self, parent: &OwnedFd, name: &str, mode: u32) -> io::Result<()> {
        let fd = fs::openat(parent, name, DIR | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                refused("a link, not a directory, is there")
            } else {
                e.into()
            }
        })?;
        Ok(fs::fchmod(&fd, Mode::from_raw_mode(mode))?)
    }

    /// Sets the mode of the directory at `path`, which must exist.
    pub fn set_dir_mode(&self, path: &RelPath, mode: u32) -> io::Result<()> {
        let (parent, name) = self.parent(path, false)?;
        self.chmod_dir(&parent, name, mode)
    }

    /// A symbolic link at `path` to `target` (stored as given: it is only
    /// ever followed inside a root), replacing whatever was at `path`.
    pub fn symlink(&self, path: &RelPath, target: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path, true)?;
        let tmp = temp_name(name);
        fs::symlinkat(target, &dir, tmp.as_str())?;
        self.replace(&dir, &tmp, name)
    }

    /// A hard link at `path` to the file at `target` (resolved inside the
    /// root; a link as its last component is linked itself, not followed).
    pub fn hard_link(&self, path: &RelPath, target: &RelPath) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(target, false)?;
        let (dir, name) = self.parent(path, true)?;
        let tmp = temp_name(name);
        fs::linkat(&from_dir, from_name, &dir, tmp.as_str(), AtFlags::empty())?;
        self.replace(&dir, &tmp, name)
    }

    fn replace(&self, dir: &OwnedFd, tmp: &str, name: &str) -> io::Result<()> {
        fs::renameat(dir, tmp, dir, name).inspect_err(|_| {
            let _ = fs::unlinkat(dir, tmp, AtFlags::empty());
        })?;
        Ok(())
    }

    /// Reads the regular file at `path` (links resolved inside the root),
    /// refusing one larger than `limit` bytes.
    pub fn read(&self, path: &RelPath, limit: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let fd =
            fs::openat2(&self.fd, RelPath::joined(&path.0), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty(), IN_ROOT)?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(refused("not a regular file"));
        }
        let mut out = Vec::new();
        file.take(limit + 1).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(refused(&format!("larger than {limit} bytes")));
        }
        Ok(out)
    }

    /// Moves everything in `from` (a root inside the same file system) into
    /// this root: into directories that exist here, by rename otherwise.
    /// Every destination is resolved inside this root.
    pub fn take_all(&self, from: &Root) -> io::Result<()> {
        self.take_dir(from, &RelPath(Vec::new()))
    }

    fn take_dir(&self, from: &Root, at: &RelPath) -> io::Result<()> {
        let src = from.dir(&at.0, false)?;
        let dst = self.dir(&at.0, false)?;
        for name in entries(&src)? {
            let child = at.child(&name);
            let is_dir = fs::statat(&src, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| fs::FileType::from_raw_mode(s.st_mode) == fs::FileType::Directory);
            if is_dir && fs::openat2(&self.fd, RelPath::joined(&child.0), DIR, Mode::empty(), IN_ROOT).is_ok() {
                self.take_dir(from, &child)?;
            } else {
                fs::renameat(&src, name.as_str(), &dst, name.as_str())?;
            }
        }
        Ok(())
    }
}

/// The names in a directory, without `.` and `..`.
fn entries(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::Dir::read_from(dir.as_fd())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// A name beside `name` that no other writer uses.
fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(".{}.ign-{}-{n}", name.chars().take(32).collect::<String>(), std::process::id())
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_owned())
}
