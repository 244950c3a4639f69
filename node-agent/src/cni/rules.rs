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

fn save(iptables: &str) -> Result<String> {
    let save = format!("{iptables}-save");
    let saved = Command::new(&save).output().with_context(|| format!("running {save}"))?;
    if !saved.status.success() {
        bail!("{save}: {}", String::from_utf8_lossy(&saved.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&saved.stdout).into_owned())
}

/// The jumps into our chains, as `iptables-save` prints them.
const MASQ_JUMP: (&str, &str) = ("POSTROUTING", "-m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG");
const FWD_JUMP: (&str, &str) = ("FORWARD", "-m comment --comment \"flanneld forward\" -j FLANNEL-FWD");

impl Rules {
    /// The chains' contents (restoring a chain replaces what it held) and
    /// the jumps into them that `saved` (iptables-save output) lacks.
    pub fn render(&self, saved: &str) -> String {
        let (n, s) = (self.network, self.subnet);
        let jump = |(chain, rule): (&str, &str)| {
            let have = saved.lines().any(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with(rule));
            if have {
                String::new()
            } else {
                format!("-I {chain} 1 {rule}\n")
            }
        };
        format!(
            "*nat\n\
             :FLANNEL-POSTRTG - [0:0]\n\
             -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {s} -d {n} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {n} -d {s} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG ! -s {n} -d {s} {MASQ} -j RETURN\n\
             -A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully\n\
             -A FLANNEL-POSTRTG ! -s {n} -d {n} {MASQ} -j MASQUERADE --random-fully\n\
             {}\
             COMMIT\n\
             *filter\n\
             :FLANNEL-FWD - [0:0]\n\
             -A FLANNEL-FWD -s {n} {FWD} -j ACCEPT\n\
             -A FLANNEL-FWD -d {n} {FWD} -j ACCEPT\n\
             {}\
             COMMIT\n",
            jump(MASQ_JUMP),
            jump(FWD_JUMP)
        )
    }

    /// Loads the chains and makes sure POSTROUTING and FORWARD jump to them:
    /// one `iptables-save` (none when the tables are `known_empty`) and one
    /// `iptables-restore`, as each run of the (dynamically linked) tools is
    /// dear on a slow machine.
    pub fn apply(&self, iptables: &str, known_empty: bool) -> Result<()> {
        let saved = if known_empty { String::new() } else { save(iptables)? };
        let restore = format!("{iptables}-restore");
        let mut child = Command::new(&restore)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {restore}"))?;
        let input = self.render(&saved);
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{restore}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = Rules { network: "10.1.0.0/16".parse().unwrap(), subnet: "10.1.5.0/24".parse().unwrap() };
        let first = r.render("");
        testkit::assert_golden!("golden/flannel.rules", &first);
        // Once the jumps exist (as iptables-save prints them), they are not added again.
        let saved = "*nat\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\nCOMMIT\n\
                     *filter\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\nCOMMIT\n";
        let again = r.render(saved);
        assert!(!again.contains("-I "), "{again}");
        assert_eq!(again.lines().count(), first.lines().count() - 2);
    }
}
