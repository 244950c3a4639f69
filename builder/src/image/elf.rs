//! ELF facts the builder needs: is a binary static, and if not, which
//! interpreter and libraries it asks for.

use anyhow::{bail, Context, Result};
use object::elf::{FileHeader64, DT_NEEDED, PT_INTERP};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::Endianness;

/// What a binary needs from the system to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// `PT_INTERP`: the dynamic loader, if any.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub libraries: Vec<String>,
}

impl Needs {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.libraries.is_empty()
    }
}

/// Reads a 64-bit ELF file's interpreter and needed libraries.
pub fn needs(data: &[u8]) -> Result<Needs> {
    let header = FileHeader64::<Endianness>::parse(data).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("unknown ELF byte order")?;
    let mut out = Needs::default();
    for ph in header.program_headers(endian, data).context("reading program headers")? {
        if ph.p_type(endian) == PT_INTERP {
            let raw = ph.data(endian, data).map_err(|()| anyhow::anyhow!("bad PT_INTERP segment"))?;
            let path = raw.split(|b| *b == 0).next().unwrap_or_default();
            out.interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let sections = header.sections(endian, data).context("reading section headers")?;
    if let Some((entries, link)) = sections.dynamic(endian, data).context("reading the dynamic section")? {
        let strings = sections.strings(endian, data, link).context("reading dynamic strings")?;
        for d in entries {
            if d.d_tag(endian) == u64::from(DT_NEEDED) {
                let name = d.string(endian, strings).context("bad DT_NEEDED string")?;
                out.libraries.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(out)
}

/// Fails unless `data` is a fully static ELF executable.
pub fn ensure_static(data: &[u8], what: &str) -> Result<()> {
    let n = needs(data).with_context(|| format!("reading {what}"))?;
    if !n.is_static() {
        bail!(
            "{what} is not static: interpreter {:?}, libraries {:?} (it runs as PID 1 with no libraries; \
             build it with `cargo build --release` inside the repository, whose .cargo/config.toml links it \
             statically, or pass --agent a static build)",
            n.interpreter,
            n.libraries
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_shell_is_dynamic() {
        let n = needs(&std::fs::read("/bin/sh").unwrap()).unwrap();
        assert!(n.interpreter.as_deref().unwrap().contains("ld-linux"), "{n:?}");
        assert!(n.libraries.iter().any(|l| l.starts_with("libc.so")), "{n:?}");
    }

    #[test]
    fn our_test_binary_is_static() {
        // The workspace links every binary with crt-static.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(needs(&me).unwrap(), Needs::default());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(needs(b"not an elf").is_err());
    }
}

/// A shared object a binary needs, and where the builder reads it from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SharedObject {
    /// Absolute path inside the image, as the loader will look for it.
    pub image_path: String,
    pub source: std::path::PathBuf,
}

/// Library directories the glibc loader searches on Debian x86_64.
const LIB_DIRS: [&str; 6] =
    ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"];

/// The interpreter and library closure of `binaries`, looked up in `roots`
/// in order (a payload's own tree first, then the host's `/`).
pub fn library_closure(binaries: &[Vec<u8>], roots: &[&std::path::Path]) -> Result<Vec<SharedObject>> {
    use std::collections::BTreeMap;
    let mut found: BTreeMap<String, SharedObject> = BTreeMap::new();
    let mut queue: Vec<Needs> = binaries.iter().map(|b| needs(b)).collect::<Result<_>>()?;
    while let Some(n) = queue.pop() {
        let mut wanted: Vec<(String, Option<String>)> = n.libraries.into_iter().map(|l| (l, None)).collect();
        if let Some(interp) = n.interpreter {
            wanted.push((interp.clone(), Some(interp)));
        }
        for (name, absolute) in wanted {
            let key = absolute.clone().unwrap_or_else(|| name.clone());
            if found.values().any(|s| s.image_path == key || s.image_path.ends_with(&format!("/{name}"))) {
                continue;
            }
            let so = locate(&name, absolute.as_deref(), roots)?;
            queue.push(needs(&std::fs::read(&so.source)?).with_context(|| format!("reading {}", so.source.display()))?);
            found.insert(so.image_path.clone(), so);
        }
    }
    Ok(found.into_values().collect())
}

fn locate(name: &str, absolute: Option<&str>, roots: &[&std::path::Path]) -> Result<SharedObject> {
    let candidates: Vec<String> = match absolute {
        Some(abs) => vec![abs.trim_start_matches('/').to_owned()],
        None => LIB_DIRS.iter().map(|d| format!("{d}/{name}")).collect(),
    };
    for root in roots {
        for rel in &candidates {
            let p = root.join(rel);
            if p.is_file() {
                let source = p.canonicalize().with_context(|| format!("resolving {}", p.display()))?;
                return Ok(SharedObject { image_path: format!("/{rel}"), source });
            }
        }
    }
    bail!(
        "shared library {name} not found in {}",
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod closure_tests {
    use super::*;

    /// Debian's etcd needs glibc's loader and libc; both resolve on the host.
    #[test]
    fn etcd_closure_from_the_host() {
        let etcd = std::fs::read("/usr/bin/etcd").expect("etcd-server is installed (tests/install-deps.sh)");
        let libs = library_closure(&[etcd], &[std::path::Path::new("/")]).unwrap();
        let paths: Vec<&str> = libs.iter().map(|l| l.image_path.as_str()).collect();
        assert!(paths.contains(&"/lib64/ld-linux-x86-64.so.2"), "{paths:?}");
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        for l in &libs {
            assert!(l.source.is_file() && !l.source.is_symlink(), "{l:?}");
        }
    }

    #[test]
    fn missing_library_is_an_error() {
        let sh = std::fs::read("/bin/sh").unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = library_closure(&[sh], &[empty.path()]).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
