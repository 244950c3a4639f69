//! What the kernel command line tells the image's agent: where its config
//! is (Ignition's `ignition.config.url=`, `ignition.platform.id=`) and our
//! own flags (`node-agent.debug`, `node-agent.probe`). Words for the kernel
//! or other programs are none of our business; our own words that we cannot
//! use are reported as warnings, never silently ignored.

/// Platforms whose config we know how to find (Ignition's names): the
/// clouds of `cloud::Platform`, and where the config comes by URL, fw_cfg or
/// the image itself.
const PLATFORMS: [&str; 9] = ["aws", "ec2", "gcp", "azure", "openstack", "digitalocean", "hetzner", "metal", "qemu"];
const FLAGS: [&str; 2] = ["node-agent.debug", "node-agent.probe"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// The first `ignition.config.url=` (as Ignition itself takes it).
    pub config_url: Option<String>,
    /// `ignition.platform.id=`, when it is one we support.
    pub platform: Option<String>,
    /// `node-agent.debug`: debug log lines.
    pub debug: bool,
    /// `node-agent.probe`: keep a probe pod up after `ready`.
    pub probe: bool,
    /// Our own words we could not use, with the reason.
    pub warnings: Vec<String>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Self {
        let mut c = Cmdline::default();
        let mut urls = 0;
        for word in text.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("ignition.config.url", Some(url)) => {
                    urls += 1;
                    c.config_url.get_or_insert_with(|| url.to_owned());
                }
                ("ignition.platform.id", Some(id)) if PLATFORMS.contains(&id) => c.platform = Some(id.to_owned()),
                ("ignition.platform.id", Some(id)) => c.warnings.push(format!(
                    "ignition.platform.id={id} is not supported ({} are); looking for a config URL, fw_cfg or the \
                     embedded config",
                    PLATFORMS.join(", ")
                )),
                ("ignition.config.url" | "ignition.platform.id", None) => {
                    c.warnings.push(format!("{key} without =VALUE; ignored"));
                }
                ("node-agent.debug", None) => c.debug = true,
                ("node-agent.probe", None) => c.probe = true,
                (flag, Some(_)) if FLAGS.contains(&flag) => {
                    c.warnings.push(format!("{word}: {flag} takes no value; ignored"));
                }
                (other, _) if other.starts_with("node-agent.") => {
                    c.warnings.push(format!("{word}: not a node-agent flag (known: {}); ignored", FLAGS.join(", ")))
                }
                _ => {}
            }
        }
        if urls > 1 {
            let first = c.config_url.as_deref().unwrap_or_default();
            c.warnings.push(format!("ignition.config.url is given {urls} times; using the first, {first}"));
        }
        c
    }

    /// Whether the config comes over the network, so the node needs an
    /// address before it can look for it.
    pub fn config_by_network(&self) -> bool {
        self.config_url.is_some() || self.cloud().is_some()
    }

    /// The cloud whose metadata holds the user data.
    pub fn cloud(&self) -> Option<super::cloud::Platform> {
        self.platform.as_deref().and_then(super::cloud::Platform::from_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_sources() {
        let c = Cmdline::parse("console=ttyS0 quiet node-agent.probe ignition.platform.id=ec2");
        assert!(c.probe && !c.debug && c.cloud() == Some(super::super::cloud::Platform::Aws) && c.config_by_network());
        assert!(c.warnings.is_empty());
        let c = Cmdline::parse("ignition.platform.id=qemu");
        assert!(!c.config_by_network() && c.platform.as_deref() == Some("qemu"));
    }
}
