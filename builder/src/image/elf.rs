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
        bail!("{what} is not static: interpreter {:?}, libraries {:?}", n.interpreter, n.libraries);
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
