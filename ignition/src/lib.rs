//! Our Ignition model: a small builder over `ignition-config`'s v3.3.0 types.
//!
//! It knows files, directories, systemd units and drop-ins, and how to carry a
//! payload (inline as a gzip `data:` URL, or by URL with a sha512 hash). It
//! knows nothing about clusters; the builder decides what goes in.

use std::io::Write;

use base64::Engine;
use flate2::{write::GzEncoder, Compression};
pub use ignition_config::v3_3 as ign;
use sha2::{Digest, Sha512};

/// The Ignition spec version every config we emit declares.
pub mod apply;

pub const SPEC_VERSION: &str = "3.3.0";

/// How a file's bytes reach the machine.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Inline in the config as these gzip-compressed bytes: works offline.
    /// Made by [`Payload::inline`], once, however many configs carry it.
    Inline { gzipped: Vec<u8> },
    /// Fetched by Ignition from `url` and checked against the bytes' sha512.
    Remote { url: String, bytes_sha512: [u8; 64] },
}

impl Payload {
    /// An inline payload of `bytes`.
    pub fn inline(bytes: &[u8]) -> Self {
        Payload::Inline { gzipped: gzip(bytes) }
    }

    /// A remote payload for `bytes` that will be served at `url`.
    pub fn remote(url: impl Into<String>, bytes: &[u8]) -> Self {
        Payload::Remote { url: url.into(), bytes_sha512: Sha512::digest(bytes).into() }
    }
}

/// A config under construction.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    files: Vec<ign::File>,
    directories: Vec<ign::Directory>,
    units: Vec<ign::Unit>,
    users: Vec<ign::User>,
    merges: Vec<ign::Resource>,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A root-owned file with `mode` (octal, e.g. `0o644`).
    pub fn file(mut self, path: &str, mode: u32, payload: &Payload) -> Self {
        let mut f = ign::File::new(path.to_owned());
        f.mode = Some(i64::from(mode));
        f.overwrite = Some(true);
        f.contents = Some(resource(payload));
        self.files.push(f);
        self
    }

    /// A small text file, inline and uncompressed so the config stays readable.
    pub fn text_file(mut self, path: &str, mode: u32, text: &str) -> Self {
        let mut f = ign::File::new(path.to_owned());
        f.mode = Some(i64::from(mode));
        f.overwrite = Some(true);
        f.contents = Some(ign::Resource { source: Some(data_url(text.as_bytes())), ..Default::default() });
        self.files.push(f);
        self
    }

    /// A small text file owned by user and group `id`: a number, so that
    /// Ignition needs no passwd lookup in the root it writes.
    pub fn text_file_owned(self, path: &str, mode: u32, id: u32, text: &str) -> Self {
        let mut b = self.text_file(path, mode, text);
        let f = b.files.last_mut().expect("just added");
        f.user = Some(ign::NodeUser { id: Some(i64::from(id)), ..Default::default() });
        f.group = Some(ign::NodeGroup { id: Some(i64::from(id)), ..Default::default() });
        b
    }

    pub fn directory(mut self, path: &str, mode: u32) -> Self {
        let mut d = ign::Directory::new(path.to_owned());
        d.mode = Some(i64::from(mode));
        self.directories.push(d);
        self
    }

    /// A unit with its contents, enabled or not.
    pub fn unit(mut self, name: &str, contents: &str, enabled: bool) -> Self {
        let mut u = ign::Unit::new(name.to_owned());
        u.contents = Some(contents.to_owned());
        u.enabled = Some(enabled);
        self.units.push(u);
        self
    }

    /// A drop-in for a unit the OS ships, optionally enabling that unit.
    pub fn dropin(mut self, unit: &str, name: &str, contents: &str, enable: bool) -> Self {
        let mut d = ign::Dropin::new(name.to_owned());
        d.contents = Some(contents.to_owned());
        let mut u = ign::Unit::new(unit.to_owned());
        u.dropins = Some(vec![d]);
        u.enabled = enable.then_some(true);
        self.units.push(u);
        self
    }

    /// SSH keys for `user` (Flatcar's `core`), which the OS already has.
    pub fn ssh_authorized_keys(mut self, user: &str, keys: &[String]) -> Self {
        let mut u = ign::User::new(user.to_owned());
        u.ssh_authorized_keys = Some(keys.to_vec());
        self.users.push(u);
        self
    }

    /// A config for Ignition to merge into this one (its own merge rules),
    /// inline and checked by sha512.
    pub fn merge(mut self, config: &[u8]) -> Self {
        self.merges.push(ign::Resource {
            source: Some(data_url(config)),
            verification: Some(ign::Verification {
                hash: Some(format!("sha512-{}", hex::encode(Sha512::digest(config)))),
            }),
            ..Default::default()
        });
        self
    }

    pub fn build(self) -> ign::Config {
        let mut ignition = ign::Config::default().ignition;
        if !self.merges.is_empty() {
            ignition.config = Some(ign::IgnitionConfig { merge: Some(self.merges), replace: None });
        }
        ign::Config {
            ignition,
            passwd: (!self.users.is_empty()).then_some(ign::Passwd { users: Some(self.users), groups: None }),
            storage: Some(ign::Storage {
                directories: non_empty(self.directories),
                files: non_empty(self.files),
                ..Default::default()
            }),
            systemd: Some(ign::Systemd { units: non_empty(self.units) }),
            ..Default::default()
        }
    }
}

/// A small config that makes Ignition fetch `url` and merge it, refusing
/// anything whose sha512 is not that of `full` (clouds cap user-data size).
pub fn merge_stub(url: &str, full: &[u8]) -> ign::Config {
    let mut cfg = ign::Config::default();
    cfg.ignition.config = Some(ign::IgnitionConfig {
        merge: Some(vec![ign::Resource {
            source: Some(url.to_owned()),
            verification: Some(ign::Verification {
                hash: Some(format!("sha512-{}", hex::encode(Sha512::digest(full)))),
            }),
            ..Default::default()
        }]),
        replace: None,
    });
    cfg
}

/// Renders a config as the bytes we write: pretty JSON with a final newline.
pub fn render(cfg: &ign::Config) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(cfg).expect("ignition types always serialize");
    out.push(b'\n');
    out
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn resource(payload: &Payload) -> ign::Resource {
    match payload {
        Payload::Inline { gzipped } => {
            ign::Resource { compression: Some("gzip".into()), source: Some(data_url(gzipped)), ..Default::default() }
        }
        Payload::Remote { url, bytes_sha512 } => ign::Resource {
            source: Some(url.clone()),
            verification: Some(ign::Verification { hash: Some(format!("sha512-{}", hex::encode(bytes_sha512))) }),
            ..Default::default()
        },
    }
}

fn data_url(bytes: &[u8]) -> String {
    format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Deterministic gzip: flate2 writes mtime 0 and no file name. The default
/// level: `best` is twice as slow for 0.5% less on the agent. Public so a
/// caller can cache what [`Payload::inline`] would compute.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn parse(bytes: &[u8]) -> ign::Config {
        match ignition_config::Config::parse_slice(bytes).unwrap() {
            (ignition_config::Config::V3_3(c), w) if w.is_empty() => c,
            other => panic!("not a clean 3.3.0 config: {other:?}"),
        }
    }

    #[test]
    fn inline_payload_round_trips() {
        let cfg = ConfigBuilder::new().file("/opt/bin/x", 0o755, &Payload::inline(b"hello")).build();
        let cfg = parse(&render(&cfg));
        assert_eq!(cfg.ignition.version.as_deref(), Some(SPEC_VERSION));
        let f = &cfg.storage.unwrap().files.unwrap()[0];
        assert_eq!(f.mode, Some(0o755));
        let src = f.contents.as_ref().unwrap().source.as_ref().unwrap();
        let gz = base64::engine::general_purpose::STANDARD.decode(src.strip_prefix("data:;base64,").unwrap()).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn remote_payload_carries_sha512() {
        let p = Payload::remote("http://127.0.0.1/agent", b"hello");
        let cfg = parse(&render(&ConfigBuilder::new().file("/a", 0o755, &p).build()));
        let f = &cfg.storage.unwrap().files.unwrap()[0];
        let v = f.contents.as_ref().unwrap().verification.as_ref().unwrap();
        // sha512("hello"), as `sha512sum` prints it.
        assert_eq!(
            v.hash.as_deref(),
            Some("sha512-9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043")
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let build = || render(&ConfigBuilder::new().file("/a", 0o600, &Payload::inline(&[7; 4096])).build());
        assert_eq!(build(), build());
    }
}
