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

use super::cloud::{self, Platform};
use super::drive;

/// One place a config can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `ignition.config.url=` on the kernel command line.
    Url(String),
    /// A cloud's user data (`ignition.platform.id=`), at this metadata base URL.
    Cloud(Platform, String),
    /// OpenStack's config drive (a block device labelled `config-2`).
    ConfigDrive,
    /// QEMU `-fw_cfg name=opt/com.coreos/config,file=…`.
    FwCfg(PathBuf),
    /// The node config the builder put in the image.
    Embedded(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => write!(f, "url {}", redacted(u)),
            Source::Cloud(p, base) => write!(f, "{} metadata {base}{}", p.id(), p.path()),
            Source::ConfigDrive => write!(f, "config drive labelled {}", drive::LABEL),
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
    if let Some(platform) = cmdline.cloud() {
        // As Ignition's OpenStack provider: the drive needs no network.
        if platform == Platform::OpenStack {
            out.push(Source::ConfigDrive);
        }
        out.push(Source::Cloud(platform, cloud::METADATA.to_owned()));
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
        Source::Cloud(platform, base) => {
            match cloud::user_data(*platform, base, cloud::PATIENCE, apply::LIMITS.config)? {
                Some(bytes) => apply_ignition(&bytes, root),
                None => bail!("the {} metadata service holds no user data for this machine", platform.id()),
            }
        }
        Source::ConfigDrive => {
            load_fs_modules();
            // A CD-ROM's SCSI scan may still be running: a few seconds' grace.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let (dev, fs) = loop {
                match drive::find(Path::new("/sys")) {
                    Some(found) => break found,
                    None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                    None => bail!("no block device is labelled {}", drive::LABEL),
                }
            };
            log::info(&format!("config drive: {} ({})", dev.display(), fs.as_str()));
            match drive::user_data(&dev, fs, apply::LIMITS.config)? {
                Some(bytes) => apply_ignition(&bytes, root),
                None => bail!("the config drive {} holds no {}", dev.display(), drive::USER_DATA),
            }
        }
    }
}

/// The file systems a config drive may have (and their character sets),
/// from the image's driver table; built-in ones need nothing.
fn load_fs_modules() {
    let Ok(Some(table)) = crate::coldplug::load_table(Path::new(node_config::layout::COLDPLUG_TABLE)) else { return };
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release);
    let mut loaded = Default::default();
    // FAT reads names in code page 437 and, by default on Debian, the ascii I/O charset.
    for m in ["isofs", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"] {
        for file in table.load_order(m, &mut loaded) {
            if let Err(e) = crate::kmod::load_file(&dir.join(&file)) {
                log::warn(&format!("loading {}: {e:#}", file.display()));
            }
        }
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
        let limit = apply::LIMITS.config;
        super::read_at_most(self.fetch(url)?, limit)
            .map_err(|e| chain(&e))?
            .ok_or_else(|| format!("the config is larger than the limit of {limit} bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cloud_sources_by_platform() {
        let none = Path::new("/nonexistent");
        assert_eq!(
            sources("ignition.platform.id=aws", none, none),
            [Source::Cloud(Platform::Aws, cloud::METADATA.into())]
        );
        assert_eq!(
            sources("ignition.platform.id=openstack", none, none),
            [Source::ConfigDrive, Source::Cloud(Platform::OpenStack, cloud::METADATA.into())]
        );
        assert_eq!(
            Source::Cloud(Platform::Gcp, cloud::METADATA.into()).to_string(),
            "gcp metadata http://169.254.169.254/computeMetadata/v1/instance/attributes/user-data"
        );
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
