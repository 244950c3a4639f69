//! Where bytes come from: kernels and payload packages, behind one function
//! per kind, all cached by digest. All downloading lives here.

mod cache;
pub mod deb;
pub mod decompress;
pub mod kernel;
mod spec;
mod unpack;
pub mod url;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use cache::{sha256_file, Cache, CACHE_ENV};
pub use spec::SourceSpec;

/// Makes a source available as a directory tree on disk: the folder itself,
/// a package unpacked, or a download unpacked (a `.deb`, a `.tar.gz`, or a
/// single executable named after the URL's last segment).
pub fn tree(cache: &Cache, spec: &SourceSpec) -> Result<PathBuf> {
    match spec {
        SourceSpec::Folder(p) => {
            if !p.is_dir() {
                bail!("{} is not a folder", p.display());
            }
            Ok(p.clone())
        }
        SourceSpec::Deb(p) => deb::unpack(cache, p),
        SourceSpec::Apt(pkg) => {
            let (file, sha) = deb::download(cache, pkg)?;
            deb::unpack_known(cache, &file, &sha)
        }
        SourceSpec::Url { url, sha256 } => {
            let blob = url::download(cache, url, sha256)?;
            unpack_blob(cache, &blob, sha256, url)
        }
    }
}

fn unpack_blob(cache: &Cache, blob: &Path, sha256: &[u8; 32], url: &str) -> Result<PathBuf> {
    let mut magic = [0u8; 8];
    std::fs::File::open(blob)?.read_exact(&mut magic).with_context(|| format!("{url} is too short"))?;
    if &magic == b"!<arch>\n" {
        return deb::unpack_known(cache, blob, sha256);
    }
    let dest = cache.tree(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = cache.scratch()?;
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root)?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob)?);
        unpack::tar_into(gz, &root).with_context(|| format!("unpacking {url}"))?;
    } else if magic.starts_with(b"\x7fELF") {
        // The URL's last segment names the file, if it is a plain name.
        let last = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or_default();
        let plain = !matches!(last, "" | "." | "..") && last.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        let name = if plain { last } else { "download" };
        let target = root.join(name);
        std::fs::copy(blob, &target)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    } else {
        bail!("{url} is neither a .deb, a .tar.gz nor an executable");
    }
    cache.commit(&root, &dest)?;
    Ok(dest)
}

/// Finds `name` in a payload tree: at one of `dirs` (relative), or at the root.
pub fn find_in_tree(tree: &Path, dirs: &[&str], name: &str) -> Option<PathBuf> {
    dirs.iter().chain(std::iter::once(&"")).map(|d| tree.join(d).join(name)).find(|p| p.is_file())
}
