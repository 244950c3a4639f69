//! Every kind of kernel command line the image's agent may meet, and what it
//! makes of each: where it looks for its config, its flags, the warnings it
//! logs and the errors it fails with at once. One golden file
//! (`tests/golden/kernel-cmdline.txt`; `UPDATE_GOLDEN=1` rewrites it).

use std::fmt::Write;
use std::path::Path;

use node_agent::config::providers::{check_url, sources, Source};
use node_agent::config::Cmdline;

const CASES: &[&str] = &[
    "",
    "console=ttyS0 quiet panic=-1",
    "console=ttyS0 ignition.config.url=http://10.0.2.2:8080/ignition?mac=52:54:00:01:02:03",
    "ignition.config.url=https://example.invalid/node.ign",
    "ignition.config.url=",
    "ignition.config.url=ftp://10.0.2.2/x.ign",
    "ignition.config.url=file:///etc/x.ign",
    "ignition.config.url=http//10.0.2.2/x.ign",
    "ignition.config.url=http:///x.ign",
    "ignition.config.url=http://a/1.ign ignition.config.url=http://b/2.ign",
    "ignition.config.url",
    "ignition.platform.id=aws",
    "ignition.platform.id=ec2 ignition.config.url=http://10.0.2.2/x.ign",
    "ignition.platform.id=qemu",
    "ignition.platform.id=metal ignition.config.url=http://10.0.2.2/x.ign",
    "ignition.platform.id=gcp",
    "ignition.platform.id=",
    "node-agent.debug node-agent.probe",
    "node-agent.probe=1",
    "node-agent.prob",
    "node-agent.debug=yes node-agent.verbose",
    "NODE_AGENT_FAILPOINT=panic-in-task",
    "\u{1}\u{7f} ignition.config.url=http://10.0.2.2/\u{e9}.ign",
];

fn describe(line: &str) -> String {
    let none = Path::new("/nonexistent");
    let c = Cmdline::parse(line);
    let mut out = format!("$ {line:?}\n");
    let found: Vec<String> = sources(line, none, none).iter().map(|s| s.to_string()).collect();
    let found = if found.is_empty() { "none on the command line".to_owned() } else { found.join(", ") };
    writeln!(out, "config sources: {found}").unwrap();
    let flags: Vec<&str> = [("debug", c.debug), ("probe", c.probe)].iter().filter(|f| f.1).map(|f| f.0).collect();
    if !flags.is_empty() {
        writeln!(out, "flags: {}", flags.join(" ")).unwrap();
    }
    for w in &c.warnings {
        writeln!(out, "warning: {w}").unwrap();
    }
    for s in sources(line, none, none) {
        if let Source::Url(url) = s {
            if let Err(e) = check_url(&url) {
                writeln!(out, "error: {e:#}").unwrap();
            }
        }
    }
    out
}

#[test]
fn kernel_command_lines_are_golden() {
    let text = CASES.iter().map(|c| describe(c)).collect::<Vec<_>>().join("\n");
    testkit::assert_golden!("golden/kernel-cmdline.txt", &text);
}
