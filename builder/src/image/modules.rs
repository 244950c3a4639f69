//! The kernel-module closure of a recipe: the named drivers, everything they
//! depend on, in an order the kernel can load them (dependencies first).
//!
//! Dependencies come from `modules.dep` when the tree has one (an installed
//! kernel), else from each module's own `.modinfo` `depends=` (a kernel
//! unpacked from its `.deb`, which depmod has not seen). Built-in drivers
//! (`modules.builtin`) need no file and are not an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::read::elf::{FileHeader, SectionHeader};

/// One kernel's `lib/modules/VERSION` directory.
#[derive(Debug)]
pub struct ModuleTree {
    pub dir: PathBuf,
    /// Module name (`_` for `-`) → path relative to `dir`.
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// From `modules.dep`, when present.
    dep_file: Option<HashMap<String, Vec<String>>>,
}

/// A module to put in the image, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Where it goes, relative to `lib/modules/VERSION`, always uncompressed `.ko`.
    pub rel_path: PathBuf,
}

/// The resolved closure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Closure {
    pub modules: Vec<Module>,
    /// Requested drivers the kernel has built in.
    pub builtin: Vec<String>,
}

pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|ext| name.strip_suffix(ext))?;
    Some(normalize(stem))
}

impl ModuleTree {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        scan(dir, dir, &mut files).with_context(|| format!("scanning modules in {}", dir.display()))?;
        if files.is_empty() {
            bail!("{} has no kernel modules", dir.display());
        }
        let builtin =
            read_lines(&dir.join("modules.builtin"))?.iter().filter_map(|l| module_name(Path::new(l))).collect();
        let dep_file = match std::fs::read_to_string(dir.join("modules.dep")) {
            Ok(text) => Some(parse_modules_dep(&text)),
            Err(_) => None,
        };
        Ok(ModuleTree { dir: dir.to_owned(), files, builtin, dep_file })
    }

    /// Whether the kernel has the module, as a file or built in.
    pub fn has(&self, name: &str) -> bool {
        let name = normalize(name);
        self.files.contains_key(&name) || self.builtin.contains(&name)
    }

    /// The kernel's version (this directory's name).
    pub fn version(&self) -> &str {
        self.dir.file_name().and_then(|v| v.to_str()).unwrap_or("")
    }

    /// Resolves `wanted` and its dependencies, dependencies first.
    pub fn closure(&self, wanted: &[String]) -> Result<Closure> {
        let mut out = Closure::default();
        let mut done = BTreeSet::new();
        for name in wanted {
            let name = normalize(name);
            if self.files.contains_key(&name) {
                self.visit(&name, &mut done, &mut Vec::new(), &mut out.modules)?;
            } else if self.builtin.contains(&name) {
                out.builtin.push(name);
            } else {
                bail!("kernel module {name} is neither in {} nor built in", self.dir.display());
            }
        }
        Ok(out)
    }

    /// Depth-first post-order: a module is pushed after everything it needs.
    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        out: &mut Vec<Module>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            bail!("kernel modules depend on each other in a cycle: {} -> {name}", stack.join(" -> "));
        }
        stack.push(name.to_owned());
        for dep in self.deps(name)? {
            if self.files.contains_key(&dep) {
                self.visit(&dep, done, stack, out)?;
            } else if !self.builtin.contains(&dep) {
                bail!("kernel module {name} needs {dep}, which {} does not have", self.dir.display());
            }
        }
        stack.pop();
        done.insert(name.to_owned());
        let rel = &self.files[name];
        out.push(Module { name: name.to_owned(), rel_path: uncompressed_path(rel) });
        Ok(())
    }

    /// The device alias patterns a module declares (`alias=` in its `.modinfo`).
    pub fn aliases(&self, name: &str) -> Result<Vec<String>> {
        let info = modinfo(&self.read(name)?).with_context(|| format!("reading .modinfo of {name}"))?;
        Ok(info.into_iter().filter(|(k, _)| k == "alias").map(|(_, v)| v).collect())
    }

    /// The modules `name` needs loaded first.
    pub fn deps(&self, name: &str) -> Result<Vec<String>> {
        if let Some(deps) = &self.dep_file {
            return Ok(deps.get(name).cloned().unwrap_or_default());
        }
        let info = modinfo(&self.read(name)?).with_context(|| format!("reading .modinfo of {name}"))?;
        let mut deps: Vec<String> = info
            .iter()
            .filter_map(|(k, v)| (k == "depends").then_some(v))
            .flat_map(|v| v.split(',').filter(|s| !s.is_empty()).map(normalize))
            .collect();
        // `softdep=pre: a b post: c`: the pre modules must load first, when present.
        for (_, v) in info.iter().filter(|(k, _)| k == "softdep") {
            deps.extend(pre_softdeps(v).into_iter().filter(|d| self.files.contains_key(d)));
        }
        Ok(deps)
    }

    /// A module's bytes, decompressed.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let rel = self.files.get(name).with_context(|| format!("no module {name}"))?;
        let path = self.dir.join(rel);
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        decompress(&path, raw)
    }
}

fn scan(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            scan(root, &path, out)?;
        } else if let Some(name) = module_name(&path) {
            out.insert(name, path.strip_prefix(root).expect("under root").to_owned());
        }
    }
    Ok(())
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko` → x: [y, z].
fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(m, deps)| {
            let name = module_name(Path::new(m.trim()))?;
            Some((name, deps.split_whitespace().filter_map(|d| module_name(Path::new(d))).collect()))
        })
        .collect()
}

fn pre_softdeps(v: &str) -> Vec<String> {
    let mut pre = false;
    let mut out = Vec::new();
    for word in v.split_whitespace() {
        match word {
            "pre:" => pre = true,
            "post:" => pre = false,
            w if pre => out.push(normalize(w)),
            _ => {}
        }
    }
    out
}

fn uncompressed_path(rel: &Path) -> PathBuf {
    let s = rel.to_string_lossy();
    let base = s.strip_suffix(".xz").or_else(|| s.strip_suffix(".zst")).or_else(|| s.strip_suffix(".gz")).unwrap_or(&s);
    PathBuf::from(base)
}

fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    crate::sources::decompress::all(&path.to_string_lossy(), &raw)
        .with_context(|| format!("unpacking {}", path.display()))
}

/// The `key=value` strings of a module's `.modinfo` section.
pub fn modinfo(ko: &[u8]) -> Result<Vec<(String, String)>> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(ko).context("not a 64-bit ELF module")?;
    let endian = header.endian().context("unknown byte order")?;
    let sections = header.sections(endian, ko)?;
    let Some((_, section)) = sections.section_by_name(endian, b".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data(endian, ko).context("bad .modinfo section")?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_dep_and_softdeps_parse() {
        let deps = parse_modules_dep("kernel/drivers/net/vxlan/vxlan.ko: kernel/net/ipv4/udp_tunnel.ko kernel/net/ipv6/ip6_udp_tunnel.ko\nkernel/x-y.ko.xz:\n");
        assert_eq!(deps["vxlan"], ["udp_tunnel", "ip6_udp_tunnel"]);
        assert_eq!(deps["x_y"], Vec::<String>::new());
        assert_eq!(pre_softdeps("pre: crc32c ghash-generic post: z"), ["crc32c", "ghash_generic"]);
        assert_eq!(uncompressed_path(Path::new("kernel/a.ko.xz")), Path::new("kernel/a.ko"));
    }
}
