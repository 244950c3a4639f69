//! Unpacking a package's tar into a cache tree that later readers can
//! trust: nothing outside the tree is written (the tar crate's checks), no
//! link leads out of it (absolute targets are taken as relative to the
//! tree, as they are to the root a package is installed into; `..` stops at
//! the tree's root), modes are plain (0755 or 0644: no setuid, nothing
//! world-writable), and sizes are bounded (no sparse entries).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use tar::EntryType;

/// What one package may unpack to: Debian's kernel with its modules is
/// about 400 MB, its largest file (a module or vmlinuz) well under 100 MB.
pub const MAX_TOTAL: u64 = 4 << 30;
pub const MAX_ENTRY: u64 = 1 << 30;

/// Unpacks `r` into `root` (which exists and is empty).
pub fn tar_into(r: impl Read, root: &Path) -> Result<()> {
    let mut tar = tar::Archive::new(r);
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut total = 0u64;
    let mut links = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::GNUSparse {
            bail!("{}: a sparse entry (not in a Debian package)", shown(&path));
        }
        let size = entry.header().size()?;
        if size > MAX_ENTRY {
            bail!("{}: {size} bytes, over the limit of {MAX_ENTRY} for one file", shown(&path));
        }
        total += size;
        if total > MAX_TOTAL {
            bail!("the package unpacks to more than {MAX_TOTAL} bytes");
        }
        if kind == EntryType::Symlink {
            let target = entry.link_name()?.context("a link without a target")?.into_owned();
            links.push((path, target));
            continue;
        }
        let mode = entry.header().mode()?;
        if entry.unpack_in(root).with_context(|| format!("unpacking {}", shown(&path)))? {
            plain_mode(&root.join(&path), mode, kind)?;
        }
    }
    // Links last, so no file is ever written through one.
    links.sort();
    for (path, target) in links {
        add_link(root, &path, &target)?;
    }
    Ok(())
}

/// A path as an error shows it: control bytes escaped.
fn shown(p: &Path) -> String {
    p.display().to_string().escape_debug().to_string()
}

fn plain_mode(path: &Path, mode: u32, kind: EntryType) -> Result<()> {
    let plain = match kind {
        EntryType::Directory => 0o755,
        EntryType::Regular | EntryType::Continuous | EntryType::Link if mode & 0o111 != 0 => 0o755,
        EntryType::Regular | EntryType::Continuous | EntryType::Link => 0o644,
        _ => return Ok(()),
    };
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(plain))?;
    }
    Ok(())
}

/// Makes the link at `path` (inside `root`) point where `target` would lead
/// if `root` were `/`, as a relative link that cannot leave `root`.
fn add_link(root: &Path, path: &Path, target: &Path) -> Result<()> {
    let Some(rel) = normal(Path::new(""), path).filter(|p| p.file_name().is_some() && no_parent_dirs(path)) else {
        return Ok(()); // as the tar crate skips `..` and root entries
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    real_dirs(root, parent).with_context(|| format!("link {}", shown(path)))?;
    let base = if target.has_root() { Path::new("") } else { parent };
    let dest = normal(base, target).unwrap_or_default();
    let link = relative(parent, &dest);
    let at = root.join(&rel);
    if std::fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(&at)?;
    }
    std::os::unix::fs::symlink(&link, &at).with_context(|| format!("creating link {}", shown(path)))
}

fn no_parent_dirs(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `base` joined with `p`, with `.` dropped and `..` stopping at the root
/// (the empty path); `None` only for a path with a Windows prefix.
fn normal(base: &Path, p: &Path) -> Option<PathBuf> {
    let mut out: Vec<&std::ffi::OsStr> = base.iter().collect();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

/// The relative path from folder `from` to `to` (both relative to the root).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (f, t): (Vec<_>, Vec<_>) = (from.iter().collect(), to.iter().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out: PathBuf = std::iter::repeat_n("..", f.len() - common).collect();
    out.extend(&t[common..]);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Creates `dir` under `root` as real folders, refusing to go through a link.
fn real_dirs(root: &Path, dir: &Path) -> Result<()> {
    let mut at = root.to_path_buf();
    for c in dir.iter() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} is not a folder", shown(&at)),
            Err(_) => std::fs::create_dir(&at)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, EntryType, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data_or_target, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            if *kind == EntryType::Symlink {
                h.set_size(0);
                h.set_link_name(data_or_target).unwrap();
                h.set_path(path).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            } else {
                h.set_size(data_or_target.len() as u64);
                h.set_path(path).unwrap();
                h.set_cksum();
                b.append(&h, data_or_target.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn links_stay_inside_and_modes_are_plain() {
        use EntryType::*;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let t = tar_of(&[
            ("etc/", Directory, "", 0o777),
            ("etc/passwd", Regular, "ours", 0o4755),
            ("etc/notes", Regular, "text", 0o666),
            ("boot/vmlinuz", Symlink, "/etc/passwd", 0o777),
            ("boot/up", Symlink, "../../../../../etc/passwd", 0o777),
            ("lib/modules/x/build", Symlink, "/usr/src/linux", 0o777),
            ("lib/same", Symlink, "../lib", 0o777),
        ]);
        tar_into(&t[..], &root).unwrap();
        let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("etc"), mode("etc/passwd"), mode("etc/notes")), (0o755, 0o755, 0o644));
        let link = |p: &str| std::fs::read_link(root.join(p)).unwrap();
        assert_eq!(link("boot/vmlinuz"), Path::new("../etc/passwd"));
        assert_eq!(link("boot/up"), Path::new("../etc/passwd"), "`..` stops at the tree's root");
        assert_eq!(link("lib/modules/x/build"), Path::new("../../../usr/src/linux"));
        assert_eq!(link("lib/same"), Path::new("."));
        assert_eq!(std::fs::read_to_string(root.join("boot/vmlinuz")).unwrap(), "ours");
    }

    #[test]
    fn a_link_never_leads_a_later_file_out_and_sizes_are_bounded() {
        use EntryType::*;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let t = tar_of(&[("out", Symlink, "/tmp", 0o777), ("out/x", Regular, "escape", 0o644)]);
        // Files first, links last: `out/x` lands in a folder of the tree, and
        // the link may not then replace that folder.
        assert!(tar_into(&t[..], &root).is_err());
        assert_eq!(std::fs::read_to_string(root.join("out/x")).unwrap(), "escape");
        assert!(!Path::new("/tmp/x").exists() || std::fs::read_to_string("/tmp/x").unwrap() != "escape");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(Regular);
        h.set_path("big").unwrap();
        h.set_size(MAX_ENTRY + 1);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.resize(bytes.len() + 1024, 0);
        let root2 = tmp.path().join("root2");
        std::fs::create_dir(&root2).unwrap();
        let err = tar_into(&bytes[..], &root2).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }
}
