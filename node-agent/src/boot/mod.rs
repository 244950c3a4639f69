//! The image's node process (`/init boot`, started and restarted by PID 1):
//! find the node config (command line, fw_cfg, cloud metadata, embedded),
//! bring up the node network (static, or DHCP for configs fetched over the
//! network), start a Vagrant guest's services, then run the node.

pub mod dhcp;
pub mod guest;
pub mod net;

use anyhow::Result;

use crate::config::NodeConfig;
use crate::{log, node, process};

/// The node's work under PID 1: find the config, bring up the node network,
/// run the role; on any error, log it and start over. Never returns.
pub fn run() -> Result<()> {
    process::exit_on_panic();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let parsed = crate::config::Cmdline::parse(&cmdline);
    log::set_debug(parsed.debug);
    for w in &parsed.warnings {
        log::warn(&format!("kernel command line: {w}"));
    }
    let opts = node::Options { probe: parsed.probe, in_image: true };
    if parsed.config_by_network() {
        // The config comes over the network: get an address first.
        if let Err(e) = process::runtime()?.block_on(net::dhcp_any()) {
            log::error(&format!("{e:#}"));
        }
    }
    let cfg = loop {
        match find_config(&cmdline) {
            Ok(cfg) => break cfg,
            Err(e) => log::error(&format!("no usable config: {e:#}")),
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    if let Err(e) = nix::unistd::sethostname(&cfg.node.name) {
        log::warn(&format!("setting the hostname: {e}"));
    }
    process::runtime()?.block_on(async {
        if let Some(guest) = &cfg.guest {
            guest::start(&cfg, guest);
        }
        loop {
            let result = match net::up(&cfg).await {
                Ok(held) => node::run(held, opts).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                log::error(&format!("{e:#}; retrying"));
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    })
}

fn find_config(cmdline: &str) -> Result<NodeConfig> {
    use crate::config::providers;
    let sources = providers::sources(
        cmdline,
        std::path::Path::new(providers::FW_CFG_PATH),
        std::path::Path::new(providers::CONFIG_PATH),
    );
    let mut last = anyhow::anyhow!("no config source: nothing on the command line, in fw_cfg, or embedded");
    for source in &sources {
        match providers::load(source, std::path::Path::new("/")) {
            Ok(cfg) => {
                log::info(&format!("config from {source}"));
                return Ok(cfg);
            }
            Err(e) => {
                log::warn(&format!("config from {source} failed: {e:#}"));
                last = e;
            }
        }
    }
    Err(last)
}
