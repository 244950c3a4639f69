//! Applying a config's storage section to a root directory, as the agent
//! does at first boot in the image: files (data: and fetched sources, gzip,
//! hash verification), directories and links; `ignition.config.merge` and
//! `replace` are followed first. Only spec 3.3.0 is applied.
//!
//! Nothing a config says reaches outside its root: every path is resolved
//! inside it ([`root`]), links included. Sizes are bounded ([`Limits`]) and
//! hashes are checked while the bytes stream, so a hostile config can
//! neither fill memory nor leave unverified bytes behind. [`stage`] applies
//! to a fresh directory first, so the caller can check the result before
//! [`Staged::commit`] moves it into the live root.

mod root;
mod source;

use std::io::Read;
use std::path::Path;

use ignition_config::v3_3 as ign;

pub use root::{RelPath, Root};
use source::Expected;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("not an Ignition config: {0}")]
    Parse(String),
    #[error("Ignition spec {0} is not supported here (3.3.0 is)")]
    Version(String),
    #[error("{what}: {why}")]
    Resource { what: String, why: String },
    #[error("writing {0}: {1}")]
    Io(String, std::io::Error),
}

type Result<T> = std::result::Result<T, ApplyError>;

/// How sources other than `data:` URLs are fetched (HTTP(S), by the caller):
/// the body as a stream, of which the applier reads no more than its limit.
pub trait Fetch {
    fn fetch(&self, url: &str) -> std::result::Result<Box<dyn Read + '_>, String>;
}

/// How large things may get, after decompression.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A config (the first one, and each merged or replacing one): parsed in memory.
    pub config: u64,
    /// One file's contents: streamed to its file, never held whole.
    pub file: u64,
    /// Everything one application parses and writes, together: a config
    /// cannot fan out past it with many files or merges.
    pub total: u64,
    /// Configs fetched in all (merges and replacements, at any depth).
    pub configs: u32,
}

/// A config that embeds the agent is ~4 MB; a file is at most a binary
/// such as etcd or kubelet (~100 MB); a node's whole config a few of those.
/// All with room to spare, and within an image's RAM root.
pub const LIMITS: Limits = Limits { config: 32 << 20, file: 512 << 20, total: 1 << 30, configs: 64 };

/// What was applied, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub files: Vec<String>,
    pub directories: Vec<String>,
    pub links: Vec<String>,
    /// What the config asks that this applier does not do (users, units,
    /// disks, kernel arguments), by name, for the caller to warn about.
    pub skipped: Vec<String>,
}

/// Applies `config` (JSON bytes) under `root` (made if missing), in place.
pub fn apply(config: &[u8], root: &Path, fetch: &dyn Fetch) -> Result<Applied> {
    apply_with(config, root, fetch, LIMITS)
}

/// [`apply`] with other limits.
pub fn apply_with(config: &[u8], root: &Path, fetch: &dyn Fetch, limits: Limits) -> Result<Applied> {
    let io = |e| ApplyError::Io(root.display().to_string(), e);
    std::fs::create_dir_all(root).map_err(io)?;
    let dir = Root::open(root).map_err(io)?;
    Ok(walk(config, &dir, fetch, limits)?.0)
}

/// Applies `config` under `root`: what was applied, and each directory's mode.
fn walk(config: &[u8], root: &Root, fetch: &dyn Fetch, limits: Limits) -> Result<(Applied, Vec<(RelPath, u32)>)> {
    let mut walk = Walk::new(root, fetch, limits);
    walk.config(&parse_bounded(config, limits.config)?, 0)?;
    Ok((walk.applied, walk.modes))
}

/// A config applied to a staging directory inside the live root, not yet
/// moved into it. Dropped without [`Staged::commit`], it is removed.
pub struct Staged {
    dir: tempfile::TempDir,
    root: Root,
    applied: Applied,
    modes: Vec<(RelPath, u32)>,
}

/// Applies `config` to a new staging directory in `live`.
pub fn stage(config: &[u8], live: &Path, fetch: &dyn Fetch) -> Result<Staged> {
    let io = |e| ApplyError::Io(live.display().to_string(), e);
    let dir = tempfile::Builder::new().prefix(".ignition-stage-").tempdir_in(live).map_err(io)?;
    let root = Root::open(dir.path()).map_err(io)?;
    let (applied, modes) = walk(config, &root, fetch, LIMITS)?;
    Ok(Staged { dir, root, applied, modes })
}

impl Staged {
    /// Reads a file the config wrote (links resolved inside the stage).
    pub fn read(&self, path: &str, limit: u64) -> std::io::Result<Vec<u8>> {
        self.root.read(&RelPath::new(path), limit)
    }

    /// Moves what was applied into `live` (every destination resolved inside
    /// it), then gives the config's directories their modes there too.
    pub fn commit(self, live: &Path) -> Result<Applied> {
        let io = |e| ApplyError::Io(live.display().to_string(), e);
        let live_root = Root::open(live).map_err(io)?;
        live_root.take_all(&self.root).map_err(io)?;
        for (dir, mode) in &self.modes {
            live_root.set_dir_mode(dir, *mode).map_err(|e| ApplyError::Io(dir.to_string(), e))?;
        }
        drop(self.dir);
        Ok(self.applied)
    }
}

/// An error with its causes, each said once: reqwest's own message omits
/// why a request failed (refused, reset, the TLS alert). For every HTTP
/// client of the workspace (the agent's config fetches, the builder's etcd).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// A URL as logs may show it: a `token=` value (what `imgbuild serve`
/// checks, and a merge stub's URL carries) is replaced: consoles and logs
/// reach more people than the node's config should.
pub fn redacted(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            // The key as `imgbuild serve` reads it: `%74oken` is `token` too.
            Some((k, _)) if decoded_key(k).eq_ignore_ascii_case("token") => format!("{k}=REDACTED"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

fn decoded_key(k: &str) -> String {
    form_urlencoded::parse(k.as_bytes()).next().map(|(key, _)| key.into_owned()).unwrap_or_default()
}

/// Only 3.3.0 is read, and only its types are deserialized: the agent
/// carries no other spec version's code (ignition-config's `parse_slice`
/// would pull in all seven).
pub fn parse(bytes: &[u8]) -> Result<ign::Config> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApplyError::Parse(e.to_string()))?;
    let version = v["ignition"]["version"].as_str().unwrap_or("?");
    if version != crate::SPEC_VERSION {
        return Err(ApplyError::Version(version.to_owned()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApplyError::Parse(e.to_string()))
}

fn parse_bounded(bytes: &[u8], limit: u64) -> Result<ign::Config> {
    if bytes.len() as u64 > limit {
        return Err(ApplyError::Parse(format!("the config is larger than the limit of {limit} bytes")));
    }
    parse(bytes)
}

/// One application of a config tree to one root.
struct Walk<'a> {
    root: &'a Root,
    fetch: &'a dyn Fetch,
    limits: Limits,
    applied: Applied,
    /// Each directory's mode, to set again where a commit merges it into
    /// a directory that already exists.
    modes: Vec<(RelPath, u32)>,
    /// Each file's mode so far, by path, for merged entries without one.
    file_modes: std::collections::HashMap<String, u32>,
    /// Bytes and configs left of `limits.total` and `limits.configs`.
    bytes_left: u64,
    configs_left: u32,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Root, fetch: &'a dyn Fetch, limits: Limits) -> Self {
        let (bytes_left, configs_left) = (limits.total, limits.configs);
        Walk {
            root,
            fetch,
            limits,
            applied: Applied::default(),
            modes: Vec::new(),
            file_modes: Default::default(),
            bytes_left,
            configs_left,
        }
    }

    /// How much one resource may be: its own limit, or what is left in all.
    fn cap(&self, own: u64) -> u64 {
        own.min(self.bytes_left)
    }

    /// Counts `n` bytes against the total; names the right limit on failure.
    fn spend(&mut self, own: u64, r: std::result::Result<u64, Failure>) -> std::result::Result<(), String> {
        match r {
            Ok(n) => {
                self.bytes_left -= n.min(self.bytes_left);
                Ok(())
            }
            Err(Failure::TooLarge) if self.cap(own) < own => {
                Err(format!("the config's contents together are larger than the limit of {} bytes", self.limits.total))
            }
            Err(Failure::TooLarge) => Err(format!("larger than the limit of {own} bytes")),
            Err(Failure::Other(why)) => Err(why),
        }
    }

    fn config(&mut self, cfg: &ign::Config, depth: u32) -> Result<()> {
        if depth > 5 {
            return Err(ApplyError::Resource {
                what: "ignition.config".into(),
                why: "configs merge too deeply".into(),
            });
        }
        if let Some(r) = cfg.ignition.config.as_ref().and_then(|c| c.replace.as_ref()) {
            let child = self.config_resource(r, "ignition.config.replace")?;
            return self.config(&child, depth + 1);
        }
        // As Ignition merges: the config's own entries first, then each
        // merged config's, which win where they name the same path.
        self.applied.skipped.extend(skipped(cfg));
        for entry in cfg.storage.as_ref().map(entries).unwrap_or_default() {
            match entry {
                Entry::Directory(d) => self.directory(d)?,
                Entry::File(f) => self.file(f)?,
                Entry::Link(l) => self.link(l)?,
            }
        }
        let merges = cfg.ignition.config.as_ref().and_then(|c| c.merge.as_ref());
        for (i, r) in merges.into_iter().flatten().enumerate() {
            let child = self.config_resource(r, &format!("ignition.config.merge[{i}]"))?;
            self.config(&child, depth + 1)?;
        }
        Ok(())
    }

    fn config_resource(&mut self, r: &ign::Resource, what: &str) -> Result<ign::Config> {
        if self.configs_left == 0 {
            let why = format!("more than {} configs to merge or replace in all", self.limits.configs);
            return Err(resource_error(what, why));
        }
        self.configs_left -= 1;
        let mut bytes = Vec::new();
        let own = self.limits.config;
        let r = stream(r, self.fetch, &mut bytes, self.cap(own));
        self.spend(own, r).map_err(|why| resource_error(what, why))?;
        parse(&bytes)
    }

    fn directory(&mut self, d: &ign::Directory) -> Result<()> {
        let (path, mode) = (entry_path(&d.path)?, mode(&d.path, d.mode, 0o755)?);
        self.root.create_dir(&path, mode).map_err(|e| ApplyError::Io(d.path.clone(), e))?;
        self.modes.push((path, mode));
        self.applied.directories.push(d.path.clone());
        Ok(())
    }

    fn file(&mut self, f: &ign::File) -> Result<()> {
        // A merged entry that leaves the mode out keeps the one an earlier
        // config gave the path (Ignition merges field by field): a 0600
        // secret whose contents a later config replaces stays 0600.
        let earlier = self.file_modes.get(&f.path).copied();
        let (path, mode) = (entry_path(&f.path)?, mode(&f.path, f.mode, earlier.unwrap_or(0o644))?);
        self.file_modes.insert(f.path.clone(), mode);
        let (own, cap, fetch) = (self.limits.file, self.cap(self.limits.file), self.fetch);
        let mut streamed = Ok(0);
        let written = self.root.write_file(&path, mode, |file| {
            let Some(r) = &f.contents else { return Ok(()) };
            streamed = stream(r, fetch, file, cap);
            streamed.as_ref().map(drop).map_err(|_| std::io::Error::other("streaming the contents"))
        });
        let failed = self.spend(own, streamed).err();
        match (written, failed) {
            (Ok(()), _) => {}
            (Err(_), Some(why)) => return Err(resource_error(&f.path, why)),
            (Err(e), None) => return Err(ApplyError::Io(f.path.clone(), e)),
        }
        self.applied.files.push(f.path.clone());
        Ok(())
    }

    fn link(&mut self, l: &ign::Link) -> Result<()> {
        let path = entry_path(&l.path)?;
        let to = l.target.clone().unwrap_or_default();
        let r = if l.hard == Some(true) {
            self.root.hard_link(&path, &RelPath::new(&to))
        } else {
            self.root.symlink(&path, &to)
        };
        r.map_err(|e| ApplyError::Io(l.path.clone(), e))?;
        self.applied.links.push(l.path.clone());
        Ok(())
    }
}

enum Entry<'c> {
    Directory(&'c ign::Directory),
    File(&'c ign::File),
    Link(&'c ign::Link),
}

/// The sections of `cfg` beyond files, directories and links, named as a
/// user would look for them in the config.
fn skipped(cfg: &ign::Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &cfg.passwd {
        out.extend(p.users.iter().flatten().map(|u| format!("passwd.users[{}]", u.name)));
        out.extend(p.groups.iter().flatten().map(|g| format!("passwd.groups[{}]", g.name)));
    }
    if let Some(s) = &cfg.systemd {
        out.extend(s.units.iter().flatten().map(|u| format!("systemd.units[{}]", u.name)));
    }
    if let Some(s) = &cfg.storage {
        let counts = [
            ("storage.disks", s.disks.as_ref().map_or(0, Vec::len)),
            ("storage.raid", s.raid.as_ref().map_or(0, Vec::len)),
            ("storage.filesystems", s.filesystems.as_ref().map_or(0, Vec::len)),
            ("storage.luks", s.luks.as_ref().map_or(0, Vec::len)),
        ];
        out.extend(counts.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{what} ({n})")));
    }
    if cfg.kernel_arguments.as_ref().is_some_and(|k| k.should_exist.is_some() || k.should_not_exist.is_some()) {
        out.push("kernelArguments".into());
    }
    out
}

/// The storage entries in the order Ignition creates them: fewer path
/// components first (so a link is in place before anything below it), and
/// within one depth directories, then files, then links.
fn entries(storage: &ign::Storage) -> Vec<Entry<'_>> {
    let dirs = storage.directories.iter().flatten().map(|d| (d.path.as_str(), Entry::Directory(d)));
    let files = storage.files.iter().flatten().map(|f| (f.path.as_str(), Entry::File(f)));
    let links = storage.links.iter().flatten().map(|l| (l.path.as_str(), Entry::Link(l)));
    let mut all: Vec<_> = dirs.chain(files).chain(links).collect();
    all.sort_by_key(|(path, _)| RelPath::new(path).depth());
    all.into_iter().map(|(_, e)| e).collect()
}

/// An entry's path below the root; the root itself is no entry.
fn entry_path(path: &str) -> Result<RelPath> {
    let p = RelPath::new(path);
    if p.is_root() {
        return Err(resource_error(path, "the root itself cannot be a file, directory or link".into()));
    }
    Ok(p)
}

/// A mode as Ignition accepts it: 0 to 07777 (setuid, setgid and sticky
/// included), else the entry is refused.
fn mode(path: &str, mode: Option<i64>, default: u32) -> Result<u32> {
    match mode {
        None => Ok(default),
        Some(m) if (0..=0o7777).contains(&m) => Ok(m as u32),
        Some(m) => Err(resource_error(path, format!("mode {m} is outside 0 to 07777 (octal)"))),
    }
}

fn resource_error(what: &str, why: String) -> ApplyError {
    ApplyError::Resource { what: what.to_owned(), why }
}

/// Why a resource could not be streamed.
#[derive(Debug)]
enum Failure {
    /// Past the limit it was given.
    TooLarge,
    Other(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Other(why)
    }
}

/// Streams a resource's contents into `to`: fetched, decompressed, at most
/// `limit` bytes, its hash checked on the way (over the decompressed
/// bytes). Returns how many bytes it wrote.
fn stream(
    r: &ign::Resource,
    fetch: &dyn Fetch,
    to: &mut dyn std::io::Write,
    limit: u64,
) -> std::result::Result<u64, Failure> {
    let source = r.source.as_deref().unwrap_or("data:,");
    let raw: Box<dyn Read + '_> = if let Some(data) = source.strip_prefix("data:") {
        Box::new(std::io::Cursor::new(source::decode_data_url(data)?))
    } else {
        let body = fetch.fetch(source).map_err(|e| format!("fetching {}: {e}", redacted(source)))?;
        // The compressed body is bounded too: gzip never grows data by much.
        Box::new(body.take(limit.saturating_add(limit / 8 + 4096)))
    };
    let mut body = source::decompressed(raw, r.compression.as_deref())?;
    let mut hash = match r.verification.as_ref().and_then(|v| v.hash.as_deref()) {
        Some(h) => Some(Expected::parse(h)?),
        None => None,
    };
    let n = source::copy_bounded(&mut body, to, limit, &mut hash).map_err(|e| match r.compression.as_deref() {
        _ if e.kind() == std::io::ErrorKind::FileTooLarge => Failure::TooLarge,
        Some("gzip") => Failure::Other(format!("gunzip: {e}")),
        _ => Failure::Other(e.to_string()),
    })?;
    hash.map_or(Ok(()), Expected::check)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigBuilder, Payload};

    use sha2::{Digest, Sha512};

    struct NoFetch;
    impl Fetch for NoFetch {
        fn fetch(&self, url: &str) -> std::result::Result<Box<dyn Read + '_>, String> {
            Err(format!("no network for {url}"))
        }
    }

    struct Map(Vec<(String, Vec<u8>)>);
    impl Fetch for Map {
        fn fetch(&self, url: &str) -> std::result::Result<Box<dyn Read + '_>, String> {
            let found = self.0.iter().find(|(u, _)| u == url).ok_or("404")?;
            Ok(Box::new(&found.1[..]))
        }
    }

    #[test]
    fn tokens_never_reach_a_log() {
        assert_eq!(redacted("http://h/ignition?mac=m&token=abc"), "http://h/ignition?mac=m&token=REDACTED");
        assert_eq!(redacted("http://h/x?TOKEN=a&token=b"), "http://h/x?TOKEN=REDACTED&token=REDACTED");
        assert_eq!(redacted("http://h/x"), "http://h/x");
        // However the key is spelled, a server reads it as `token`.
        assert_eq!(redacted("http://h/x?%74oken=a&t%6Fken=b&%5"), "http://h/x?%74oken=REDACTED&t%6Fken=REDACTED&%5");
    }

    #[test]
    fn paths_are_cleaned_as_ignition_cleans_them() {
        assert_eq!(RelPath::new("/../../etc/x").to_string(), "/etc/x");
        assert_eq!(RelPath::new("/a/./b/../c").to_string(), "/a/c");
        assert!(RelPath::new("/").is_root() && RelPath::new("/a/..").is_root());
    }

    #[test]
    fn applies_what_we_build() {
        let cfg = ConfigBuilder::new()
            .directory("/etc/node-agent", 0o700)
            .file("/opt/bin/tool", 0o755, &Payload::inline(b"binary"))
            .text_file("/etc/node-agent/config.json", 0o600, "{}\n")
            .build();
        let root = tempfile::tempdir().unwrap();
        let a = apply(&crate::render(&cfg), root.path(), &NoFetch).unwrap();
        assert_eq!(a.files, ["/opt/bin/tool", "/etc/node-agent/config.json"]);
        assert_eq!(std::fs::read(root.path().join("opt/bin/tool")).unwrap(), b"binary");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.path().join("etc/node-agent/config.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn merged_configs_win_and_keep_a_mode_they_leave_out() {
        use base64::Engine;
        let child = r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/secret","overwrite":true,"contents":{"source":"data:,rotated"}}]}}"#;
        let url = format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(child));
        let parent = format!(
            r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{{"source":"{url}"}}]}}}},
                "storage":{{"files":[{{"path":"/etc/secret","mode":384,"contents":{{"source":"data:,first"}}}}]}}}}"#
        );
        let root = tempfile::tempdir().unwrap();
        apply(parent.as_bytes(), root.path(), &NoFetch).unwrap();
        let path = root.path().join("etc/secret");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "rotated", "the merged config wins, as in Ignition");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn sections_it_does_not_apply_are_named() {
        let cfg = r#"{"ignition":{"version":"3.3.0"},
            "passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]},
            "systemd":{"units":[{"name":"x.service","enabled":true}]},
            "storage":{"filesystems":[{"device":"/dev/vdb","format":"ext4"}],
                       "files":[{"path":"/etc/x","contents":{"source":"data:,x"}}]}}"#;
        let root = tempfile::tempdir().unwrap();
        let applied = apply(cfg.as_bytes(), root.path(), &NoFetch).unwrap();
        assert_eq!(applied.files, ["/etc/x"]);
        assert_eq!(applied.skipped, ["passwd.users[core]", "systemd.units[x.service]", "storage.filesystems (1)"]);
    }

    #[test]
    fn merge_is_verified() {
        let inner = crate::render(&ConfigBuilder::new().text_file("/x", 0o644, "x").build());
        let good = Map(vec![("http://h/c.ign".into(), inner.clone())]);
        let stub = |hash: String| {
            format!(
                r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{{"source":"http://h/c.ign","verification":{{"hash":"{hash}"}}}}]}}}}}}"#
            )
        };
        let right = format!("sha512-{}", hex::encode(Sha512::digest(&inner)));
        let root = tempfile::tempdir().unwrap();
        apply(stub(right).as_bytes(), root.path(), &good).unwrap();
        assert_eq!(std::fs::read(root.path().join("x")).unwrap(), b"x");
        let wrong = format!("sha512-{}", "0".repeat(128));
        let root = tempfile::tempdir().unwrap();
        let e = apply(stub(wrong).as_bytes(), root.path(), &good).unwrap_err().to_string();
        assert!(e.contains("hash verification failed"), "{e}");
        assert!(!root.path().join("x").exists());
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            apply(br#"{"ignition":{"version":"3.0.0"}}"#, root.path(), &NoFetch),
            Err(ApplyError::Version(_))
        ));
        assert!(matches!(apply(b"nope", root.path(), &NoFetch), Err(ApplyError::Parse(_))));
        assert_eq!(source::percent_decode("a%20b").unwrap(), b"a b");
    }
}
