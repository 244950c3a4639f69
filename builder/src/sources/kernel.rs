//! Kernels: a folder (`vmlinuz` + `lib/modules/VERSION`), a kernel `.deb`,
//! `apt:PACKAGE` (a metapackage is followed to the image it depends on), or
//! a pinned URL. Without one, the host's running kernel when its modules are
//! present, else `apt:linux-image-cloud-amd64`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{deb, Cache, SourceSpec};

pub const DEFAULT_PACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel image and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/VERSION`.
    pub modules: PathBuf,
}

/// The kernel the builder uses when none is named.
pub fn default_spec() -> SourceSpec {
    match host_kernel() {
        Some(dir) => SourceSpec::Folder(dir),
        None => SourceSpec::Apt(DEFAULT_PACKAGE.into()),
    }
}

/// `/` when the running kernel's image and modules are both readable.
fn host_kernel() -> Option<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim();
    let ok = Path::new("/lib/modules").join(release).join("modules.dep").is_file()
        && std::fs::File::open(format!("/boot/vmlinuz-{release}")).is_ok();
    ok.then(|| PathBuf::from("/"))
}

pub fn resolve(cache: &Cache, spec: &SourceSpec) -> Result<Kernel> {
    match spec {
        SourceSpec::Apt(pkg) => from_apt(cache, pkg, 3),
        SourceSpec::Folder(dir) if dir == Path::new("/") => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
            in_tree(dir, Some(release.trim()))
        }
        other => in_tree(&super::tree(cache, other)?, None),
    }
    .with_context(|| format!("kernel from {spec}"))
}

/// Follows a metapackage's `linux-image-*` dependency up to `hops` times.
fn from_apt(cache: &Cache, pkg: &str, hops: u32) -> Result<Kernel> {
    let (file, sha) = deb::download(cache, pkg)?;
    let root = deb::unpack_known(cache, &file, &sha)?;
    if let Ok(k) = in_tree(&root, None) {
        return Ok(k);
    }
    let depends = deb::field(&file, "Depends")?;
    let next = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("{pkg} has no kernel and depends on no linux-image package"))?;
    if hops == 0 {
        bail!("{pkg}: too many metapackage hops");
    }
    from_apt(cache, next, hops - 1)
}

/// Finds the kernel in an unpacked tree: `boot/vmlinuz-VERSION` or `vmlinuz`,
/// and `lib/modules/VERSION` (also under `usr/lib`).
fn in_tree(root: &Path, release: Option<&str>) -> Result<Kernel> {
    let modules_root = [root.join("lib/modules"), root.join("usr/lib/modules")]
        .into_iter()
        .find(|p| p.is_dir())
        .with_context(|| format!("{} has no lib/modules", root.display()))?;
    let version = match release {
        Some(r) => r.to_owned(),
        None => single_version(&modules_root)?,
    };
    let vmlinuz = [root.join(format!("boot/vmlinuz-{version}")), root.join("vmlinuz"), root.join("boot/vmlinuz")]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no vmlinuz for {version}", root.display()))?;
    Ok(Kernel { vmlinuz, modules: modules_root.join(&version), version })
}

fn single_version(modules_root: &Path) -> Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(modules_root)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kernel").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{} holds no kernel's modules", modules_root.display()),
        many => {
            bail!("{} holds several kernels ({}); name one folder per kernel", modules_root.display(), many.join(", "))
        }
    }
}
