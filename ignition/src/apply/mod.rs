//! Applying a config's storage section to a root directory, as the agent
//! does at first boot in the image: files (data: and fetched sources, gzip,
//! hash verification), directories and links; `ignition.config.merge` and
//! `replace` are followed first. Only spec 3.3.0 is applied.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use ignition_config::v3_3 as ign;
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("not an Ignition config: {0}")]
    Parse(String),
    #[error("Ignition spec {0} is not supported here (3.3.0 is)")]
    Version(String),
    #[error("{what}: {why}")]
    Resource { what: String, why: String },
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

type Result<T> = std::result::Result<T, ApplyError>;

/// How sources other than `data:` URLs are fetched (HTTP(S), by the caller).
pub trait Fetch {
    fn fetch(&self, url: &str) -> std::result::Result<Vec<u8>, String>;
}

/// What was applied, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub files: Vec<String>,
    pub directories: Vec<String>,
    pub links: Vec<String>,
}

/// Applies `config` (JSON bytes) under `root`.
pub fn apply(config: &[u8], root: &Path, fetch: &dyn Fetch) -> Result<Applied> {
    let cfg = parse(config)?;
    let mut applied = Applied::default();
    apply_config(&cfg, root, fetch, &mut applied, 0)?;
    Ok(applied)
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

fn apply_config(cfg: &ign::Config, root: &Path, fetch: &dyn Fetch, out: &mut Applied, depth: u32) -> Result<()> {
    if depth > 5 {
        return Err(ApplyError::Resource { what: "ignition.config".into(), why: "configs merge too deeply".into() });
    }
    if let Some(c) = &cfg.ignition.config {
        if let Some(r) = &c.replace {
            let child = parse(&resource(r, fetch, "ignition.config.replace")?)?;
            return apply_config(&child, root, fetch, out, depth + 1);
        }
        for (i, r) in c.merge.iter().flatten().enumerate() {
            let child = parse(&resource(r, fetch, &format!("ignition.config.merge[{i}]"))?)?;
            apply_config(&child, root, fetch, out, depth + 1)?;
        }
    }
    let Some(storage) = &cfg.storage else { return Ok(()) };
    for d in storage.directories.iter().flatten() {
        let p = target(root, &d.path);
        std::fs::create_dir_all(&p).map_err(|e| ApplyError::Io(p.clone(), e))?;
        set_mode(&p, d.mode.unwrap_or(0o755))?;
        out.directories.push(d.path.clone());
    }
    for f in storage.files.iter().flatten() {
        let bytes = match &f.contents {
            Some(r) => resource(r, fetch, &f.path)?,
            None => Vec::new(),
        };
        write(&target(root, &f.path), &bytes, f.mode.unwrap_or(0o644))?;
        out.files.push(f.path.clone());
    }
    for l in storage.links.iter().flatten() {
        link(root, l)?;
        out.links.push(l.path.clone());
    }
    Ok(())
}

/// `path` under `root`, cleaned as Ignition cleans it (Go's `filepath.Join`):
/// `..` stops at the root, so no config can write outside it.
pub fn target(root: &Path, path: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().fold(root.to_path_buf(), |acc, p| acc.join(p))
}

fn write(p: &Path, bytes: &[u8], mode: i64) -> Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApplyError::Io(dir.to_owned(), e))?;
    }
    std::fs::write(p, bytes).map_err(|e| ApplyError::Io(p.to_owned(), e))?;
    set_mode(p, mode)
}

fn set_mode(p: &Path, mode: i64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode as u32 & 0o7777))
        .map_err(|e| ApplyError::Io(p.to_owned(), e))
}

fn link(root: &Path, l: &ign::Link) -> Result<()> {
    let p = target(root, &l.path);
    let to = l.target.clone().unwrap_or_default();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApplyError::Io(dir.to_owned(), e))?;
    }
    let _ = std::fs::remove_file(&p);
    let r = if l.hard == Some(true) {
        std::fs::hard_link(target(root, &to), &p)
    } else {
        std::os::unix::fs::symlink(&to, &p)
    };
    r.map_err(|e| ApplyError::Io(p, e))
}

/// A resource's bytes: fetched, verified, decompressed.
fn resource(r: &ign::Resource, fetch: &dyn Fetch, what: &str) -> Result<Vec<u8>> {
    let err = |why: String| ApplyError::Resource { what: what.to_owned(), why };
    let source = r.source.as_deref().unwrap_or("data:,");
    let raw = if let Some(data) = source.strip_prefix("data:") {
        decode_data_url(data).map_err(err)?
    } else {
        fetch.fetch(source).map_err(|e| err(format!("fetching {source}: {e}")))?
    };
    let bytes = match r.compression.as_deref() {
        None | Some("") => raw,
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| err(format!("gunzip: {e}")))?;
            out
        }
        Some(other) => return Err(err(format!("compression {other:?} is not supported"))),
    };
    if let Some(hash) = r.verification.as_ref().and_then(|v| v.hash.as_deref()) {
        verify(hash, &bytes).map_err(err)?;
    }
    Ok(bytes)
}

/// Checks `sha512-HEX` or `sha256-HEX` against the (decompressed) bytes.
pub fn verify(hash: &str, bytes: &[u8]) -> std::result::Result<(), String> {
    let (kind, want) = hash.split_once('-').ok_or_else(|| format!("malformed hash {hash:?}"))?;
    let got = match kind {
        "sha512" => hex::encode(Sha512::digest(bytes)),
        "sha256" => hex::encode(Sha256::digest(bytes)),
        other => return Err(format!("unknown hash function {other:?}")),
    };
    if !got.eq_ignore_ascii_case(want) {
        return Err(format!("hash verification failed (calculated {kind}-{got} but expected {hash})"));
    }
    Ok(())
}

/// `data:[<mediatype>][;base64],<data>` (RFC 2397).
fn decode_data_url(rest: &str) -> std::result::Result<Vec<u8>, String> {
    let (meta, data) = rest.split_once(',').ok_or("data URL without a comma")?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("bad base64: {e}"))
    } else {
        percent_decode(data)
    }
}

fn percent_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigBuilder, Payload};

    struct NoFetch;
    impl Fetch for NoFetch {
        fn fetch(&self, url: &str) -> std::result::Result<Vec<u8>, String> {
            Err(format!("no network for {url}"))
        }
    }

    struct Map(Vec<(String, Vec<u8>)>);
    impl Fetch for Map {
        fn fetch(&self, url: &str) -> std::result::Result<Vec<u8>, String> {
            self.0.iter().find(|(u, _)| u == url).map(|(_, b)| b.clone()).ok_or_else(|| "404".into())
        }
    }

    #[test]
    fn paths_never_leave_the_root() {
        let root = Path::new("/r");
        assert_eq!(target(root, "/../../etc/x"), Path::new("/r/etc/x"));
        assert_eq!(target(root, "/a/./b/../c"), Path::new("/r/a/c"));
        assert_eq!(target(root, "/"), Path::new("/r"));
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
        assert_eq!(percent_decode("a%20b").unwrap(), b"a b");
    }
}
