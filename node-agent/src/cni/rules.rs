//! The forward and masquerade rules flanneld installs: pod↔pod traffic is
//! never NATed; pod→outside is. Rendered for `iptables-restore --noflush`.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
}

const MASQ: &str = "-m comment --comment \"flanneld masq\"";
const FWD: &str = "-m comment --comment \"flanneld forward\"";

impl Rules {
    /// The chains' contents; restoring a chain replaces what it held.
    pub fn render(&self) -> String {
        let (n, s) = (self.network, self.subnet);
        format!(
            "*nat\n\
             :FLANNEL-POSTRTG - [0:0]\n\
             -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {s} -d {n} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {n} -d {s} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG ! -s {n} -d {s} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully\n\
             -A FLANNEL-POSTRTG ! -s {n} -d {n} {MASQ} -j MASQUERADE --random-fully\n\
             COMMIT\n\
             *filter\n\
             :FLANNEL-FWD - [0:0]\n\
             -A FLANNEL-FWD -s {n} {FWD} -j ACCEPT\n\
             -A FLANNEL-FWD -d {n} {FWD} -j ACCEPT\n\
             COMMIT\n"
        )
    }

    /// Loads the chains and makes sure POSTROUTING and FORWARD jump to them.
    pub fn apply(&self, iptables: &str) -> Result<()> {
        let restore = format!("{iptables}-restore");
        let mut child = Command::new(&restore)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {restore}"))?;
        child.stdin.take().expect("piped").write_all(self.render().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{restore}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        ensure_jump(iptables, "nat", "POSTROUTING", "flanneld masq", "FLANNEL-POSTRTG")?;
        ensure_jump(iptables, "filter", "FORWARD", "flanneld forward", "FLANNEL-FWD")
    }
}

/// `iptables -t T -C CHAIN … || iptables -t T -I CHAIN 1 …`
fn ensure_jump(iptables: &str, table: &str, chain: &str, comment: &str, target: &str) -> Result<()> {
    let rule = ["-m", "comment", "--comment", comment, "-j", target];
    let run = |op: &[&str]| {
        Command::new(iptables).args(["-w", "-t", table]).args(op).args(rule).stderr(Stdio::null()).status()
    };
    if run(&["-C", chain])?.success() {
        return Ok(());
    }
    if !run(&["-I", chain, "1"])?.success() {
        bail!("{iptables} -t {table} -I {chain} failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = Rules { network: "10.1.0.0/16".parse().unwrap(), subnet: "10.1.5.0/24".parse().unwrap() };
        assert_eq!(r.render(), include_str!("../../tests/golden/flannel.rules"));
    }
}
