//! Writing a node's artifacts: all into a temp dir beside the target, then
//! one rename, so a failed build never leaves a half-written node behind.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One file of a node's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl Artifact {
    /// A file for its owner only (0600). The default: a new format may
    /// embed a key or a token, and nobody has to remember to hide it.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Artifact { name: name.into(), bytes, mode: 0o600 }
    }

    /// A file anyone may read (0644): only for what holds no secret.
    pub fn public(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Artifact { name: name.into(), bytes, mode: 0o644 }
    }

    /// Private when `secret` says it holds a key or token, public otherwise.
    pub fn private_if(secret: bool, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        if secret {
            Self::new(name, bytes)
        } else {
            Self::public(name, bytes)
        }
    }
}

/// Writes `artifacts` as `out/node/`, replacing the folder that was there;
/// anything else at that path is refused before anything is written.
pub fn write_node_dir(out: &Path, node: &str, artifacts: &[Artifact]) -> Result<PathBuf> {
    check_node_dir(out, node)?;
    fs::create_dir_all(out).with_context(|| format!("creating output dir {}", out.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{node}."))
        .tempdir_in(out)
        .with_context(|| format!("creating a temp dir in {}", out.display()))?;
    for a in artifacts {
        write_file(&tmp.path().join(&a.name), &a.bytes, a.mode)?;
    }
    let dest = out.join(node);
    replace_dir(tmp.keep(), &dest)?;
    Ok(dest)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", path.display()))
}

/// Where `out/node` exists and is not a folder (a file, a link), the build
/// stops before writing: it is the user's, not an earlier build's.
pub fn check_node_dir(out: &Path, node: &str) -> Result<()> {
    // `--out` itself: a folder, or nothing yet (a dangling link is neither).
    match fs::symlink_metadata(out) {
        Ok(_) if !out.is_dir() => {
            return Err(crate::error::InputError::new("--out", "", format!("{} is not a folder", out.display())).into())
        }
        _ => {}
    }
    let dest = out.join(node);
    match fs::symlink_metadata(&dest) {
        Ok(m) if !m.is_dir() => Err(crate::error::InputError::new(
            "--out",
            "",
            format!("{} exists and is not a folder a build wrote; move it away", dest.display()),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Moves `new` to `dest`; an old `dest` is moved aside (under a temporary
/// name of its own, never a user's `NODE.old`) first and removed last.
fn replace_dir(new: PathBuf, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&new, fs::Permissions::from_mode(0o755))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let had_old = fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir());
    let old = if had_old {
        // An empty folder of our own, which rename replaces with the old one.
        let aside = tempfile::Builder::new().prefix(&format!(".{name}.old.")).tempdir_in(parent)?.keep();
        fs::rename(dest, &aside).with_context(|| format!("moving aside {}", dest.display()))?;
        Some(aside)
    } else {
        None
    };
    fs::rename(&new, dest).with_context(|| format!("renaming {} to {}", new.display(), dest.display()))?;
    if let Some(old) = old {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Writes one file atomically (temp file + rename).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_node_dir() {
        let out = tempfile::tempdir().unwrap();
        write_node_dir(out.path(), "n", &[Artifact::public("a", b"1".to_vec()), Artifact::new("b", b"2".to_vec())])
            .unwrap();
        write_node_dir(out.path(), "n", &[Artifact::new("a", b"3".to_vec())]).unwrap();
        assert_eq!(fs::read(out.path().join("n/a")).unwrap(), b"3");
        assert!(!out.path().join("n/b").exists(), "stale file survived");
        let names: Vec<_> = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["n"], "temp dirs left behind");
    }

    #[test]
    fn a_users_files_beside_or_at_the_node_dir_are_left_alone() {
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("n.old"), "mine").unwrap();
        write_node_dir(out.path(), "n", &[Artifact::new("a", b"1".to_vec())]).unwrap();
        write_node_dir(out.path(), "n", &[Artifact::new("a", b"2".to_vec())]).unwrap();
        assert_eq!(fs::read(out.path().join("n.old")).unwrap(), b"mine");
        fs::write(out.path().join("m"), "a file of mine").unwrap();
        let e = write_node_dir(out.path(), "m", &[Artifact::new("a", b"1".to_vec())]).unwrap_err();
        assert!(e.chain().any(|c| c.is::<crate::error::InputError>()), "{e:#}");
        assert_eq!(fs::read(out.path().join("m")).unwrap(), b"a file of mine");
        let mut names: Vec<_> = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["m", "n", "n.old"]);
    }
}
