//! A resource's bytes as a bounded stream: read from a `data:` URL or a
//! fetched body, gunzipped, hashed as they pass, never more than a limit.

use std::io::{self, Read, Write};

use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

/// A hash the config asks for, `sha512-HEX` or `sha256-HEX`, and the
/// hasher that checks it while the bytes stream by.
pub enum Hasher {
    Sha512(Sha512),
    Sha256(Sha256),
}

pub struct Expected {
    spec: String,
    hasher: Hasher,
}

impl Expected {
    pub fn parse(hash: &str) -> Result<Self, String> {
        let (kind, _) = hash.split_once('-').ok_or_else(|| format!("malformed hash {hash:?}"))?;
        let hasher = match kind {
            "sha512" => Hasher::Sha512(Sha512::new()),
            "sha256" => Hasher::Sha256(Sha256::new()),
            other => return Err(format!("unknown hash function {other:?}")),
        };
        Ok(Expected { spec: hash.to_owned(), hasher })
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub fn check(self) -> Result<(), String> {
        let (kind, got) = match self.hasher {
            Hasher::Sha512(h) => ("sha512", hex::encode(h.finalize())),
            Hasher::Sha256(h) => ("sha256", hex::encode(h.finalize())),
        };
        let want = self.spec.split_once('-').map_or("", |(_, w)| w);
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("hash verification failed (calculated {kind}-{got} but expected {})", self.spec));
        }
        Ok(())
    }
}

/// Copies `from` into `to`, at most `limit` bytes (more is an error, and
/// stops the copy there), feeding `hash` on the way.
pub fn copy_bounded(
    from: &mut dyn Read,
    to: &mut dyn Write,
    limit: u64,
    hash: &mut Option<Expected>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than the limit of {limit} bytes")));
        }
        if let Some(h) = hash.as_mut() {
            h.update(&buf[..n]);
        }
        to.write_all(&buf[..n])?;
    }
}

/// The stream of a resource's contents: `raw`, gunzipped when `compression`
/// says so.
pub fn decompressed<'a>(raw: Box<dyn Read + 'a>, compression: Option<&str>) -> Result<Box<dyn Read + 'a>, String> {
    match compression {
        None | Some("") => Ok(raw),
        Some("gzip") => Ok(Box::new(flate2::read::GzDecoder::new(raw))),
        Some(other) => Err(format!("compression {other:?} is not supported")),
    }
}

/// `data:[<mediatype>][;base64],<data>` (RFC 2397).
pub fn decode_data_url(rest: &str) -> Result<Vec<u8>, String> {
    let (meta, data) = rest.split_once(',').ok_or("data URL without a comma")?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("bad base64: {e}"))
    } else {
        percent_decode(data)
    }
}

pub fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
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
