//! Where a booting image finds its config, tried in order: an Ignition
//! config URL on the kernel command line, QEMU's fw_cfg, the config
//! embedded in the image. An Ignition config's storage section is applied
//! to the root first; the node config is then read from the path it wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use imgbuild_ignition::apply::{self, Fetch};

use super::{Cmdline, NodeConfig};
use crate::log;
use crate::process::Backoff;

pub use node_config::layout::{CONFIG_PATH, FW_CFG_PATH};
/// EC2's instance metadata service.
pub const IMDS: &str = "http://169.254.169.254";

/// One place a config can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `ignition.config.url=` on the kernel command line.
    Url(String),
    /// EC2-style IMDSv2 user-data (`ignition.platform.id=aws`), at this base URL.
    Imds(String),
    /// QEMU `-fw_cfg name=opt/com.coreos/config,file=…`.
    FwCfg(PathBuf),
    /// The node config the builder put in the image.
    Embedded(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => write!(f, "url {}", redacted(u)),
            Source::Imds(base) => write!(f, "imds {base}/latest/user-data"),
            Source::FwCfg(p) => write!(f, "fw_cfg {}", p.display()),
            Source::Embedded(p) => write!(f, "embedded {}", p.display()),
        }
    }
}

/// The sources present on this boot, best first.
pub fn sources(cmdline: &str, fw_cfg: &Path, embedded: &Path) -> Vec<Source> {
    let cmdline = Cmdline::parse(cmdline);
    let mut out = Vec::new();
    if let Some(url) = &cmdline.config_url {
        out.push(Source::Url(url.clone()));
    }
    if cmdline.imds() {
        out.push(Source::Imds(IMDS.to_owned()));
    }
    if fw_cfg.exists() {
        out.push(Source::FwCfg(fw_cfg.to_owned()));
    }
    if embedded.exists() {
        out.push(Source::Embedded(embedded.to_owned()));
    }
    out
}

/// Loads the node config from `source`, applying Ignition configs to `root`.
pub fn load(source: &Source, root: &Path) -> Result<NodeConfig> {
    match source {
        Source::Embedded(p) => Ok(NodeConfig::load(p)?),
        Source::FwCfg(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            apply_ignition(&bytes, root)
        }
        Source::Url(url) => apply_ignition(&fetch_config(url, 8)?, root),
        Source::Imds(base) => apply_ignition(&imds_user_data(base)?, root),
    }
}

/// The config at `url`, tried up to `attempts` times with backoff: the
/// network or the server may come up after us. A malformed URL fails at once.
pub fn fetch_config(url: &str, attempts: u32) -> Result<Vec<u8>> {
    check_url(url)?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut last = String::new();
    for attempt in 1..=attempts {
        match Http.fetch_config(url) {
            Ok(b) => return Ok(b),
            Err(e) => {
                log::warn(&format!("fetching {} (try {attempt}): {e}", redacted(url)));
                last = e;
            }
        }
        if attempt < attempts {
            std::thread::sleep(backoff.next_delay());
        }
    }
    bail!("could not fetch {}: {last}", redacted(url))
}

/// A malformed `ignition.config.url=` fails at once: retrying cannot fix it.
pub fn check_url(url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(u) => {
            bail!("ignition.config.url={}: {} URLs are not supported (http and https are)", redacted(url), u.scheme())
        }
        Err(e) => bail!("ignition.config.url={:?}: not a URL ({e})", redacted(url)),
    }
}

use imgbuild_ignition::apply::error_chain as chain;
pub use imgbuild_ignition::apply::redacted;

/// IMDSv2: a session token by PUT, then the user-data with that token.
pub fn imds_user_data(base: &str) -> Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let token = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .context("getting an IMDSv2 token")?;
    let data = client
        .get(format!("{base}/latest/user-data"))
        .header("X-aws-ec2-metadata-token", token.trim())
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .context("reading IMDS user-data")?;
    Ok(data.to_vec())
}

/// Applies an Ignition config's storage under `root` and reads the node
/// config it wrote. Staged first: a config that fails to apply, or whose node
/// config is bad, changes nothing in `root`, so it can never replace a good
/// embedded one.
pub fn apply_ignition(bytes: &[u8], root: &Path) -> Result<NodeConfig> {
    let staged = apply::stage(bytes, root, &Http).context("applying the Ignition config")?;
    let text =
        staged.read(CONFIG_PATH, MAX_NODE_CONFIG).with_context(|| format!("reading node config {CONFIG_PATH}"))?;
    let cfg = NodeConfig::parse(&text)
        .map_err(|problem| node_config::ConfigError::Invalid { origin: CONFIG_PATH.into(), problem })?;
    let applied = staged.commit(root).context("moving the applied files into place")?;
    log::info(&format!(
        "applied Ignition config: {} files, {} directories, {} links",
        applied.files.len(),
        applied.directories.len(),
        applied.links.len()
    ));
    for what in &applied.skipped {
        log::warn(&format!(
            "Ignition config: {what} is not applied in the image (only files, directories and links are)"
        ));
    }
    Ok(cfg)
}

/// A node config is a few KB; anything near this is not one.
const MAX_NODE_CONFIG: u64 = 1 << 20;

/// HTTP(S) for config URLs and the resources they reference.
struct Http;

impl Fetch for Http {
    fn fetch(&self, url: &str) -> std::result::Result<Box<dyn std::io::Read + '_>, String> {
        let client =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| chain(&e))?;
        // reqwest's errors name the URL, token and all: ours names it redacted.
        let resp = client.get(url).send().and_then(|r| r.error_for_status()).map_err(|e| chain(&e.without_url()))?;
        Ok(Box::new(resp))
    }
}

impl Http {
    /// A whole config body, refused past the applier's config limit.
    fn fetch_config(&self, url: &str) -> std::result::Result<Vec<u8>, String> {
        use std::io::Read;
        let limit = apply::LIMITS.config;
        let mut out = Vec::new();
        self.fetch(url)?.take(limit + 1).read_to_end(&mut out).map_err(|e| chain(&e))?;
        if out.len() as u64 > limit {
            return Err(format!("the config is larger than the limit of {limit} bytes"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback stand-in for the metadata service that insists on IMDSv2.
    fn imds_server(user_data: &'static str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let mut r = BufReader::new(&stream);
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                let mut headers = String::new();
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    headers.push_str(&line.to_ascii_lowercase());
                    line.clear();
                }
                let (code, body) = if first.starts_with("PUT /latest/api/token")
                    && headers.contains("x-aws-ec2-metadata-token-ttl-seconds")
                {
                    ("200 OK", "tok123")
                } else if first.starts_with("GET /latest/user-data")
                    && headers.contains("x-aws-ec2-metadata-token: tok123")
                {
                    ("200 OK", user_data)
                } else {
                    ("401 Unauthorized", "")
                };
                let mut s = &stream;
                let _ =
                    write!(s, "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn bad_config_urls_on_the_command_line_fail_at_once_with_the_reason() {
        let err = |cmdline: &str| {
            let none = Path::new("/nonexistent");
            let sources = sources(cmdline, none, none);
            let e = load(&sources[0], none).unwrap_err();
            format!("{e:#}")
        };
        assert_eq!(err("ignition.config.url="), "ignition.config.url=\"\": not a URL (relative URL without a base)");
        assert_eq!(
            err("quiet ignition.config.url=ftp://10.0.2.2/x.ign"),
            "ignition.config.url=ftp://10.0.2.2/x.ign: ftp URLs are not supported (http and https are)"
        );
        assert_eq!(
            err("ignition.config.url=http//x"),
            "ignition.config.url=\"http//x\": not a URL (relative URL without a base)"
        );
        assert_eq!(
            err("ignition.config.url=file:///etc/x.ign"),
            "ignition.config.url=file:///etc/x.ign: file URLs are not supported (http and https are)"
        );
    }

    #[test]
    fn imds_v2_user_data() {
        let base = imds_server("{\"ignition\":{\"version\":\"3.3.0\"}}");
        assert_eq!(imds_user_data(&base).unwrap(), b"{\"ignition\":{\"version\":\"3.3.0\"}}");
        let s = sources("ignition.platform.id=aws", Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert_eq!(s, [Source::Imds(IMDS.into())]);
    }

    #[test]
    fn source_order() {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("fw");
        let emb = dir.path().join("emb");
        assert!(sources("quiet", &fw, &emb).is_empty());
        std::fs::write(&emb, "{}").unwrap();
        std::fs::write(&fw, "{}").unwrap();
        let s = sources(
            "console=ttyS0 ignition.config.url=http://10.0.2.2:8080/ignition?mac=52:54:00:01:02:03 quiet",
            &fw,
            &emb,
        );
        assert_eq!(
            s,
            [
                Source::Url("http://10.0.2.2:8080/ignition?mac=52:54:00:01:02:03".into()),
                Source::FwCfg(fw),
                Source::Embedded(emb)
            ]
        );
    }
}
