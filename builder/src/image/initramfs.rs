//! Assembles a role's initramfs tree (agent as `/init`, modules with their
//! load list, payloads with their libraries), then per node adds the node
//! config, writes the cpio and compresses it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use node_config::layout;

use super::cpio::{Archive, Node};
use super::elf;
use super::modules::{Module, ModuleTree};
use super::recipe::Recipe;
use crate::sources::find_in_tree;

/// Where the agent finds things in the image (the node config and module
/// lists: `node_config::layout`).
pub const CNI_BIN_DIR: &str = "opt/cni/bin";
pub const ETCD_PATH: &str = "usr/bin/etcd";

/// The fixed mtime of every entry: `SOURCE_DATE_EPOCH`, else 0.
pub fn mtime_from_env() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// How the archive is compressed. The kernel unpacks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
}

/// Unpacked payload trees a role may draw from.
#[derive(Debug, Clone, Default)]
pub struct Payloads {
    pub etcd: Option<PathBuf>,
    pub cni: Option<PathBuf>,
    /// Per recipe tool: its package's tree and its library packages' trees.
    pub tools: Vec<(PathBuf, Vec<PathBuf>)>,
}

/// Everything in a role's image but the node's own config.
pub fn role_base(agent: &[u8], modules: &ModuleTree, recipe: &Recipe, payloads: &Payloads) -> Result<Archive> {
    let mut a = Archive::new();
    a.file("init", 0o755, agent.to_vec())?;
    for d in ["proc", "sys", "dev", "run", "tmp", "root", "var/lib", "etc/cni/net.d", "mnt"] {
        a.dir(d)?;
    }
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    a.add("dev/console", 0o600, Node::CharDev(5, 1))?;
    a.add("dev/null", 0o666, Node::CharDev(1, 3))?;
    add_modules(&mut a, modules, &recipe.modules, &recipe.pod_modules)?;
    add_drivers(&mut a, modules, &recipe.drivers)?;
    let mut binaries = Vec::new();
    if recipe.etcd {
        let tree = payloads.etcd.as_deref().context("the etcd role needs artifacts.etcd")?;
        let etcd = find_in_tree(tree, &["usr/bin", "bin"], "etcd")
            .with_context(|| format!("no etcd in {}", tree.display()))?;
        binaries.push(add_binary(&mut a, &etcd, ETCD_PATH)?);
    }
    for plugin in &recipe.cni_plugins {
        let tree = payloads.cni.as_deref().context("this role needs artifacts.cni")?;
        let bin = find_in_tree(tree, &["usr/lib/cni", "opt/cni/bin", "usr/libexec/cni"], plugin)
            .with_context(|| format!("no CNI plugin {plugin} in {}", tree.display()))?;
        binaries.push(add_binary(&mut a, &bin, &format!("{CNI_BIN_DIR}/{plugin}"))?);
    }
    add_tools_and_files(&mut a, recipe, payloads, binaries)?;
    Ok(a)
}

/// What a recipe of tools and files alone adds, as an archive of its own
/// that the kernel unpacks over a role's image (a Vagrant box's extras).
pub fn overlay(recipe: &Recipe, payloads: &Payloads) -> Result<Archive> {
    let mut a = Archive::new();
    add_tools_and_files(&mut a, recipe, payloads, Vec::new())?;
    Ok(a)
}

/// The recipe's tools and files, plus the libraries of every binary.
fn add_tools_and_files(
    a: &mut Archive,
    recipe: &Recipe,
    payloads: &Payloads,
    mut binaries: Vec<Vec<u8>>,
) -> Result<()> {
    for (tool, (tree, _)) in recipe.tools.iter().zip(&payloads.tools) {
        for f in &tool.files {
            binaries.push(add_binary(a, &tree.join(f), f)?);
        }
        for (link, target) in &tool.links {
            a.add(link, 0o777, Node::Symlink(target.clone()))?;
        }
    }
    for f in &recipe.files {
        a.file(&f.path, f.mode, f.text.clone().into_bytes())?;
    }
    let mut roots: Vec<&Path> = [payloads.etcd.as_deref(), payloads.cni.as_deref()].into_iter().flatten().collect();
    for (tree, libs) in &payloads.tools {
        roots.push(tree);
        roots.extend(libs.iter().map(PathBuf::as_path));
    }
    roots.push(Path::new("/"));
    for so in elf::library_closure(&binaries, &roots)? {
        let bytes = std::fs::read(&so.source).with_context(|| format!("reading {}", so.source.display()))?;
        a.file(&so.image_path, 0o755, bytes)?;
    }
    Ok(())
}

fn add_binary(a: &mut Archive, src: &Path, dest: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    a.file(dest, 0o755, bytes.clone())?;
    Ok(bytes)
}

/// Both module lists, each in load order; a module both need loads with
/// the boot list, and an image with no pod-only modules has no pod list.
fn add_modules(a: &mut Archive, tree: &ModuleTree, boot: &[String], pods: &[String]) -> Result<()> {
    let version = tree.dir.file_name().and_then(|v| v.to_str()).context("module dir has no version name")?;
    let boot = tree.closure(boot)?;
    let in_boot: std::collections::BTreeSet<&str> = boot.modules.iter().map(|m| m.name.as_str()).collect();
    let pods = tree.closure(pods)?;
    let pod_only: Vec<&Module> = pods.modules.iter().filter(|m| !in_boot.contains(m.name.as_str())).collect();
    add_module_list(a, tree, version, layout::in_archive(layout::MODULE_LIST), boot.modules.iter())?;
    if !pod_only.is_empty() {
        add_module_list(a, tree, version, layout::in_archive(layout::POD_MODULE_LIST), pod_only.into_iter())?;
    }
    Ok(())
}

/// The device drivers (with what they need) and the coldplug table PID 1
/// matches devices against: each module with its file and dependencies,
/// then each alias it declares. Modules the boot list also holds are
/// listed again (loading one twice is no error) so the table stands alone.
fn add_drivers(a: &mut Archive, tree: &ModuleTree, drivers: &[String]) -> Result<()> {
    if drivers.is_empty() {
        return Ok(());
    }
    let version = tree.dir.file_name().and_then(|v| v.to_str()).context("module dir has no version name")?;
    let closure = tree.closure(drivers)?;
    let names: std::collections::BTreeSet<&str> = closure.modules.iter().map(|m| m.name.as_str()).collect();
    let (mut modules, mut aliases) = (String::new(), String::new());
    for m in &closure.modules {
        let rel = m.rel_path.to_str().context("module path is not UTF-8")?;
        let path = format!("lib/modules/{version}/{rel}");
        if !a.contains(&path) {
            a.file(&path, 0o644, tree.read(&m.name)?)?;
        }
        let deps: Vec<String> = tree.deps(&m.name)?.into_iter().filter(|d| names.contains(d.as_str())).collect();
        modules.push_str(&format!("module {} {rel}", m.name));
        for d in deps {
            modules.push(' ');
            modules.push_str(&d);
        }
        modules.push('\n');
        // A pattern with whitespace could not be a modalias (the kernel makes none).
        for alias in tree.aliases(&m.name)?.into_iter().filter(|p| !p.is_empty() && !p.contains(char::is_whitespace)) {
            aliases.push_str(&format!("alias {alias} {}\n", m.name));
        }
    }
    a.file(layout::in_archive(layout::COLDPLUG_TABLE), 0o644, (modules + &aliases).into_bytes())
}

/// The modules themselves, and the list PID 1 loads them from.
fn add_module_list<'m>(
    a: &mut Archive,
    tree: &ModuleTree,
    version: &str,
    list_path: &str,
    modules: impl Iterator<Item = &'m Module>,
) -> Result<()> {
    let mut list = String::new();
    for m in modules {
        let rel = m.rel_path.to_str().context("module path is not UTF-8")?;
        a.file(&format!("lib/modules/{version}/{rel}"), 0o644, tree.read(&m.name)?)?;
        list.push_str(rel);
        list.push('\n');
    }
    a.file(list_path, 0o644, list.into_bytes())
}

/// The node's image: the role base plus its config, written and compressed.
pub fn node_initrd(base: &Archive, config_json: &str, mtime: u32, compression: Compression) -> Result<Vec<u8>> {
    let mut a = base.clone();
    a.file(layout::in_archive(layout::CONFIG_PATH), 0o600, config_json.as_bytes().to_vec())?;
    compress(&a.write(mtime), compression)
}

/// Compresses with a fixed worker count, so output does not depend on the
/// machine's cores (zstd's multi-threaded format is the same for any count ≥ 1).
pub fn compress(data: &[u8], c: Compression) -> Result<Vec<u8>> {
    match c {
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 3), 3)?;
            enc.multithread(2)?;
            enc.include_checksum(true)?;
            std::io::Write::write_all(&mut enc, data)?;
            Ok(enc.finish()?)
        }
        Compression::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), flate2::Compression::new(6));
            std::io::Write::write_all(&mut enc, data)?;
            Ok(enc.finish()?)
        }
    }
}

/// The kernel command line written to `cmdline`. `cryptomgr.notests`: Debian
/// builds its kernels for FIPS and so runs every crypto algorithm's self-test
/// at boot, which upstream's default config leaves off; under emulation they
/// cost 0.5–0.9 s before PID 1. With `fips=1` the kernel runs them anyway.
pub fn cmdline(debug: bool) -> String {
    let mut words = vec!["console=ttyS0,115200n8", "panic=10", "cryptomgr.notests"];
    if debug {
        words.push("node-agent.debug");
    } else {
        words.push("quiet");
    }
    let mut s = words.join(" ");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// The `cmdline` file, word for word (the crypto self-tests stay off).
    #[test]
    fn kernel_command_line() {
        assert_eq!(super::cmdline(false), "console=ttyS0,115200n8 panic=10 cryptomgr.notests quiet\n");
        assert_eq!(super::cmdline(true), "console=ttyS0,115200n8 panic=10 cryptomgr.notests node-agent.debug\n");
    }
}
