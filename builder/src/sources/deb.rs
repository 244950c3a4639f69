//! Debian packages: unpacking in-process (an `ar` archive holding
//! `control.tar.*` and `data.tar.*`, so `--kernel FILE.deb` and URL sources
//! work without dpkg) into the cache, and downloading by name (with
//! `apt-get download`, which checks the archive's signed hashes).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use object::read::archive::ArchiveFile;

use super::cache::{sha256_file, Cache};
use super::decompress;

/// Unpacks `deb` once into the cache; returns the tree's root.
pub fn unpack(cache: &Cache, deb: &Path) -> Result<PathBuf> {
    unpack_known(cache, deb, &sha256_file(deb)?)
}

/// As `unpack`, for a file whose sha256 is already known (a verified download).
pub fn unpack_known(cache: &Cache, deb: &Path, sha: &[u8; 32]) -> Result<PathBuf> {
    let dest = cache.tree(sha);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = cache.scratch()?;
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root)?;
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let (name, data) = member(&bytes, "data.tar").with_context(|| format!("unpacking {}", deb.display()))?;
    super::unpack::tar_into(decompress::reader(name, data)?, &root)
        .with_context(|| format!("unpacking {name} of {}", deb.display()))?;
    cache.commit(&root, &dest)?;
    Ok(dest)
}

/// The member of a `.deb` named `prefix` (`data.tar`, `control.tar`) with
/// its compression suffix. As dpkg requires: `debian-binary` (format 2.x)
/// first, then `control.tar*`, then `data.tar*`.
fn member<'a>(deb: &'a [u8], prefix: &str) -> Result<(&'a str, &'a [u8])> {
    let ar = ArchiveFile::parse(deb).context("not a Debian package (an ar archive)")?;
    let mut members = Vec::new();
    for m in ar.members().take(3) {
        let m = m.context("a damaged ar member")?;
        let name = std::str::from_utf8(m.name()).context("a member name that is not UTF-8")?.trim_end_matches('/');
        members.push((name, m.data(deb).context("a member past the end of the file")?));
    }
    let named = |i: usize, want: &str| {
        members.get(i).is_some_and(|(n, _)| {
            *n == want || n.strip_prefix(want).is_some_and(|ext| [".gz", ".xz", ".zst"].contains(&ext))
        })
    };
    match members.first() {
        Some(("debian-binary", v)) if v.starts_with(b"2.") => {}
        Some(("debian-binary", v)) => bail!("package format {:?} is not 2.x", String::from_utf8_lossy(v).trim()),
        _ => bail!("the first member is not debian-binary: not a Debian package"),
    }
    if !named(1, "control.tar") || !named(2, "data.tar") {
        bail!("members are not debian-binary, control.tar[.gz|.xz|.zst], data.tar[.gz|.xz|.zst]");
    }
    let i = if prefix == "control.tar" { 1 } else { 2 };
    Ok(members[i])
}

/// A control field of a package file, e.g. `Depends` (empty when absent).
pub fn field(deb: &Path, name: &str) -> Result<String> {
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let (member_name, data) = member(&bytes, "control.tar").with_context(|| format!("reading {}", deb.display()))?;
    let mut tar = tar::Archive::new(decompress::reader(member_name, data)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() != "./control" && entry.path()?.as_os_str() != "control" {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        return Ok(control_field(&text, name));
    }
    bail!("{}: no control file", deb.display())
}

/// A field of a control file, with its continuation lines joined.
fn control_field(control: &str, name: &str) -> String {
    let mut lines =
        control.lines().skip_while(|l| !l.split_once(':').is_some_and(|(k, _)| k.eq_ignore_ascii_case(name)));
    let Some(first) = lines.next() else { return String::new() };
    let mut value = first.split_once(':').map_or("", |(_, v)| v).trim().to_owned();
    for cont in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push(' ');
        value.push_str(cont.trim());
    }
    value
}

/// What apt would install for `package`: its version and the archive's sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
    pub sha256: [u8; 32],
    /// The package file's size, for the download's progress bar (0: unknown).
    pub size: u64,
}

pub fn candidate(package: &str) -> Result<Candidate> {
    let text = match run(Command::new("apt-cache").args(["show", "--no-all-versions", package])) {
        Ok(t) if !t.trim().is_empty() => t,
        _ => {
            // A fresh machine has no package lists yet.
            update_lists()?;
            run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
                .with_context(|| format!("apt knows no package {package}"))?
        }
    };
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}: "))).map(str::to_owned);
    let version = get("Version").with_context(|| format!("apt-cache show {package}: no Version"))?;
    let sha = get("SHA256").with_context(|| format!("apt-cache show {package}: no SHA256"))?;
    let sha256 = hex::decode(&sha).ok().and_then(|v| v.try_into().ok()).context("apt-cache gave a bad SHA256")?;
    let size = get("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Candidate { package: package.to_owned(), version, sha256, size })
}

/// When apt's package lists last changed: the candidate cannot have changed
/// since (asking apt-cache costs about a second per package).
fn lists_stamp() -> Option<String> {
    let m = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let t = m("/var/lib/apt/lists")?.duration_since(std::time::UNIX_EPOCH).ok()?;
    let prefs =
        m("/etc/apt/preferences.d").and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Some(format!("{}.{}-{}", t.as_secs(), t.subsec_nanos(), prefs.as_nanos()))
}

/// `candidate`, remembered in the cache until apt's lists change.
fn cached_candidate(cache: &Cache, package: &str) -> Result<Candidate> {
    let file = cache.root.join("apt").join(format!("{package}.candidate"));
    let stamp = lists_stamp();
    if let (Some(stamp), Ok(text)) = (&stamp, std::fs::read_to_string(&file)) {
        let lines: Vec<&str> = text.lines().collect();
        if let [s, version, sha, size] = lines[..] {
            if s == stamp {
                if let Some(sha256) = hex::decode(sha).ok().and_then(|v| v.try_into().ok()) {
                    let size = size.parse().unwrap_or(0);
                    return Ok(Candidate { package: package.to_owned(), version: version.to_owned(), sha256, size });
                }
            }
        }
    }
    let c = candidate(package)?;
    if let Some(stamp) = lists_stamp() {
        let _ = std::fs::create_dir_all(file.parent().expect("has parent"));
        let _ = std::fs::write(&file, format!("{stamp}\n{}\n{}\n{}\n", c.version, hex::encode(c.sha256), c.size));
    }
    Ok(c)
}

/// The package file for `package` and its sha256, from the cache or
/// downloaded and checked.
pub fn download(cache: &Cache, package: &str) -> Result<(PathBuf, [u8; 32])> {
    let c = cached_candidate(cache, package)?;
    let dest = cache.blob(&c.sha256);
    if dest.is_file() {
        return Ok((dest, c.sha256));
    }
    crate::ui::note(&format!("downloading {}={} with apt-get", c.package, c.version));
    let tmp = cache.scratch()?;
    // apt drops privileges to _apt for downloads; let it write here.
    let _ = Command::new("chmod").arg("0777").arg(tmp.path()).status();
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "-q", &format!("{}={}", c.package, c.version)]).current_dir(tmp.path());
    run_with_progress(&mut cmd, tmp.path(), c.size, &c.package).with_context(|| format!("downloading {package}"))?;
    let file = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} wrote no .deb"))?;
    if sha256_file(&file)? != c.sha256 {
        bail!("{} does not match the archive's sha256 for {package}", file.display());
    }
    cache.commit(&file, &dest)?;
    Ok((dest, c.sha256))
}

/// Runs `apt-get download` with a progress bar that follows the bytes
/// arriving in `dir` (apt shows none when its output is not a terminal).
fn run_with_progress(cmd: &mut Command, dir: &Path, size: u64, what: &str) -> Result<()> {
    let bar = if crate::ui::quiet() { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(size) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} {bar:30} {eta}").expect("static template"),
    );
    bar.set_message(format!("downloading {what}"));
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        bar.set_position(bytes_in(dir));
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    bar.finish_and_clear();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?} failed: {}", err.trim());
    }
    Ok(())
}

/// Bytes of all files under `dir` (apt writes into `partial/` first).
fn bytes_in(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_in(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn update_lists() -> Result<()> {
    crate::ui::note("no package lists yet; running apt-get update");
    run(Command::new("apt-get").args(["update", "-qq"])).map(|_| ())
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
