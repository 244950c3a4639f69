//! Pinned downloads: fetched once, checked against the sha256 the cluster
//! file pins, kept in the cache by digest. A mismatch is never kept.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::cache::Cache;

pub fn download(cache: &Cache, url: &str, sha256: &[u8; 32]) -> Result<PathBuf> {
    let dest = cache.blob(sha256);
    if dest.is_file() {
        return Ok(dest);
    }
    let tmp = cache.scratch()?;
    let file = tmp.path().join("download");
    let got = fetch_to(url, &file)?;
    if &got != sha256 {
        bail!("{url}: sha256 is {} but the cluster file pins {}; refusing it", hex::encode(got), hex::encode(sha256));
    }
    cache.commit(&file, &dest)?;
    Ok(dest)
}

/// No artifact we use is near this (a kernel package is about 26 MB): a
/// server that sends more is refused before it fills the disk.
pub const MAX_DOWNLOAD: u64 = 2 << 30;

/// Streams `url` into `path`, hashing as it goes, with a progress line.
fn fetch_to(url: &str, path: &std::path::Path) -> Result<[u8; 32]> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .context("building the HTTP client")?;
    let mut resp =
        client.get(url).send().and_then(|r| r.error_for_status()).with_context(|| format!("downloading {url}"))?;
    if resp.content_length().is_some_and(|n| n > MAX_DOWNLOAD) {
        bail!("{url}: {} bytes, over the limit of {MAX_DOWNLOAD}", resp.content_length().unwrap_or(0));
    }
    let bar = indicatif::ProgressBar::new(resp.content_length().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} {bar:30} {eta}").expect("static template"),
    );
    bar.set_message(format!("downloading {url}"));
    let mut out = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let n = resp.read(&mut buf).with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > MAX_DOWNLOAD {
            bail!("{url}: more than the limit of {MAX_DOWNLOAD} bytes; refusing it");
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hash.finalize().into())
}
