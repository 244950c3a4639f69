//! A node's Ignition config: the agent, its config and its unit, plus what
//! the role needs from Container Linux itself.

use std::path::Path;

use imgbuild_ignition::{ConfigBuilder, Payload};
use node_config::containerd::{ConfigFile, Host};
use node_config::etcd::{self, TlsFiles};
use node_config::Role;
use node_config::{Containerd, EtcdMember, NodeConfig, Paths};

use crate::cluster::fragments;
use crate::error::InputError;
use crate::plan::NodePlan;

pub const AGENT_PATH: &str = "/opt/bin/node-agent";
pub use node_config::layout::CONFIG_PATH as AGENT_CONFIG_PATH;
pub const AGENT_UNIT: &str = "node-agent.service";

/// How the agent binary travels in the config.
#[derive(Clone, Debug)]
pub enum AgentDelivery<'a> {
    /// Embedded (a [`Payload::inline`], compressed once per build): the
    /// config works offline.
    Embedded(&'a Payload),
    /// Fetched from `base_url` + `/NODE/node-agent` and checked by sha512;
    /// with the node's `token` (`--token-secret`), as `imgbuild serve` asks.
    Remote { base_url: &'a str, bytes: &'a [u8], token: Option<&'a str> },
}

impl AgentDelivery<'_> {
    /// How `program` (the artifact's name beside the agent, such as
    /// `cni-bridge`) travels: as the agent does.
    fn payload(&self, node: &str, program: &Program) -> Payload {
        match self {
            AgentDelivery::Embedded(_) => program.inline.clone(),
            AgentDelivery::Remote { base_url, token, .. } => {
                Payload::remote(remote_url(base_url, node, &program.artifact, *token), &program.bytes)
            }
        }
    }
}

/// Where a node's file is fetched from beside the agent.
fn remote_url(base_url: &str, node: &str, file: &str, token: Option<&str>) -> String {
    let url = format!("{}/{node}/{file}", base_url.trim_end_matches('/'));
    match token {
        Some(t) => format!("{url}?token={t}"),
        None => url,
    }
}

/// A program a Flatcar node gets besides the agent: the CNI plugins our
/// conflist and containerd's CRI run, from the cluster's `artifacts.cni`,
/// since stock Flatcar has none in `/opt/cni/bin`.
#[derive(Clone, Debug)]
pub struct Program {
    /// Its file name where it is installed.
    pub name: String,
    /// Its artifact's name beside `node-agent` (with `--agent-url`).
    pub artifact: String,
    pub bytes: Vec<u8>,
    /// gzip-compressed, for an embedded config.
    pub inline: Payload,
}

/// Where Flatcar's containerd reads the config we give it.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// Renders the node's Ignition config as the bytes of `NODE.ign`: what
/// imgbuild writes, the user's SSH keys for `core`, and the user's
/// fragments for Ignition to merge (checked by [`check_merges`]).
pub fn render(plan: &NodePlan, agent: &AgentDelivery, cni: &[Program]) -> Vec<u8> {
    let mut b = ours(plan, agent, cni);
    for f in &plan.node.ignition.merge {
        b = b.merge(&f.bytes);
    }
    imgbuild_ignition::render(&b.build())
}

/// A fragment may not write what imgbuild writes for the node (a path, a
/// unit, a drop-in, a user), or Ignition's merge would quietly replace it.
pub fn check_merges(plan: &NodePlan) -> Result<(), InputError> {
    if plan.node.ignition.merge.is_empty() {
        return Ok(());
    }
    let placeholder = Payload::Remote { url: "http://placeholder/".into(), bytes_sha512: [0; 64] };
    let programs: Vec<Program> = ["bridge", "host-local", "portmap", "loopback"]
        .map(|n| Program {
            name: n.into(),
            artifact: format!("cni-{n}"),
            bytes: Vec::new(),
            inline: placeholder.clone(),
        })
        .to_vec();
    let cfg = ours(plan, &AgentDelivery::Embedded(&placeholder), &programs).build();
    let ours = fragments::claims(&serde_json::to_value(&cfg).expect("a config serializes"));
    let our_paths: Vec<&str> = ours.iter().filter_map(|o| o.key.strip_prefix("path ")).collect();
    // Units we write (with contents): no drop-in of the user's may change them.
    let our_units: Vec<String> =
        ours.iter().filter_map(|o| o.key.strip_prefix("unit ")).map(|u| format!("dropin-on {u}")).collect();
    let clashes = |c: &fragments::Claim| {
        // Drop-ins on a unit we only add to (Flatcar's etcd-member) are the user's to add.
        let same = ours.iter().any(|o| o.key == c.key && !o.key.starts_with("dropin-on "));
        if same || our_units.contains(&c.key) {
            return true;
        }
        // A path above one of ours (a file or link at /opt/bin), or below
        // a file of ours, would change what we write too.
        c.key.strip_prefix("path ").is_some_and(|p| {
            our_paths.iter().any(|o| fragments::is_above(p, o))
                || our_paths.iter().any(|o| fragments::is_above(o, p) && !is_our_dir(&cfg, o))
        })
    };
    for f in &plan.node.ignition.merge {
        if let Some(c) = f.claims.iter().find(|c| clashes(c)) {
            let why = format!(
                "{} is also written by imgbuild for node {} (its agent, config, hostname, network, etcd, containerd, CNI plugins or [access]); leave it out",
                c.key, plan.node.name
            );
            return Err(InputError::new(&f.origin, &c.field, why));
        }
    }
    Ok(())
}

/// Whether `path` is a directory our config makes (the user may add files
/// in it, such as extra CA certificates beside etcd's).
fn is_our_dir(cfg: &imgbuild_ignition::ign::Config, path: &str) -> bool {
    cfg.storage.as_ref().and_then(|s| s.directories.as_ref()).is_some_and(|d| d.iter().any(|d| d.path == path))
}

/// What imgbuild itself puts in the node's config.
fn ours(plan: &NodePlan, agent: &AgentDelivery, cni: &[Program]) -> ConfigBuilder {
    let cfg = &plan.config;
    let remote;
    let payload = match agent {
        AgentDelivery::Embedded(payload) => *payload,
        AgentDelivery::Remote { base_url, bytes, token } => {
            remote = Payload::remote(remote_url(base_url, &plan.node.name, "node-agent", *token), bytes);
            &remote
        }
    };
    let mut b = ConfigBuilder::new()
        .directory("/etc/node-agent", 0o700)
        .file(AGENT_PATH, 0o755, payload)
        .text_file(AGENT_CONFIG_PATH, 0o600, &config_json(cfg))
        .text_file("/etc/hostname", 0o644, &format!("{}\n", cfg.node.name))
        .text_file("/etc/systemd/network/00-node.network", 0o644, &node_network_unit(cfg))
        .unit(AGENT_UNIT, &agent_unit(cfg.node.role), true);
    if let Some(member) = &cfg.etcd.member {
        let tls = cfg.etcd.tls.as_ref().zip(member.tls.as_ref());
        if let Some((ca, pair)) = tls {
            // etcd-member runs as user etcd; only it and root read the key.
            // Flatcar's base layout fixes etcd at uid/gid 232.
            b = b
                .directory(ETCD_SSL_DIR, 0o755)
                .text_file(&format!("{ETCD_SSL_DIR}/ca.crt"), 0o644, &ca.ca)
                .text_file(&format!("{ETCD_SSL_DIR}/etcd.crt"), 0o644, &pair.cert)
                .text_file_owned(&format!("{ETCD_SSL_DIR}/etcd.key"), 0o600, FLATCAR_ETCD_ID, &pair.key);
        }
        b = b.dropin("etcd-member.service", "20-imgbuild.conf", &etcd_member_dropin(member, tls.is_some()), true);
    }
    if cfg.node.role.has_pods() {
        b = containerd(b, plan, agent, cni);
    }
    let keys = &plan.node.ignition.ssh_authorized_keys;
    if !keys.is_empty() {
        b = b.ssh_authorized_keys("core", keys);
    }
    b
}

/// kubelet's runtime on Flatcar: its own containerd, pointed at our
/// conflist and plugin folders the way Flatcar documents (a config in
/// `/etc/containerd` and a drop-in that runs containerd with it), and the
/// CNI plugins installed where that config says.
fn containerd(mut b: ConfigBuilder, plan: &NodePlan, agent: &AgentDelivery, cni: &[Program]) -> ConfigBuilder {
    let paths = &plan.config.paths;
    let file = ConfigFile {
        spec: &Containerd::flatcar(),
        cni_conf_dir: &paths.cni_conf_dir,
        cni_bin_dir: &paths.cni_bin_dir,
        host: Host::Flatcar,
    };
    b = b.text_file(CONTAINERD_CONFIG, 0o644, &file.render());
    b = b.dropin("containerd.service", "10-imgbuild.conf", &containerd_dropin(paths), true);
    for p in cni {
        b = b.file(&format!("{}/{}", paths.cni_bin_dir.display(), p.name), 0o755, &agent.payload(&plan.node.name, p));
    }
    b
}

/// Runs Flatcar's containerd with our config. A conflist left by an
/// earlier boot names the subnet that boot leased; `subnet.env` is on tmpfs,
/// so without it this boot has no lease yet: the conflist goes until the
/// agent writes this boot's, and a sandbox asked for meanwhile fails with
/// the CRI's "cni plugin not initialized" instead of an address from a
/// range the node may no longer hold.
fn containerd_dropin(paths: &Paths) -> String {
    let env = paths.run_flannel.join("subnet.env");
    let conflist = paths.cni_conf_dir.join(node_config::layout::CONFLIST_NAME);
    format!(
        "[Service]\n\
         ExecStartPre=/bin/sh -c 'test -e {} || rm -f {}'\n\
         ExecStart=\n\
         ExecStart=/usr/bin/containerd --config {CONTAINERD_CONFIG}\n",
        env.display(),
        conflist.display()
    )
}

/// The agent's config file text (also embedded in images).
pub fn config_json(cfg: &NodeConfig) -> String {
    let mut s = serde_json::to_string_pretty(cfg).expect("node config always serializes");
    s.push('\n');
    s
}

fn agent_unit(role: Role) -> String {
    // On etcd nodes the OS's etcd-member.service runs etcd; the agent waits for it.
    let after = if role == Role::Etcd { " etcd-member.service" } else { "" };
    format!(
        "[Unit]\n\
         Description=imgbuild node agent ({role}): etcd bootstrap, flannel-compatible overlay, pod networking\n\
         Wants=network-online.target\n\
         After=network-online.target{after}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={AGENT_PATH} run --config {AGENT_CONFIG_PATH}\n\
         Restart=always\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The node interface (by MAC, or by name) for systemd-networkd: the node
/// IP with its gateway and DNS servers, or DHCP. It matches that interface
/// only, so Flatcar's catch-all DHCP unit keeps every other NIC.
fn node_network_unit(cfg: &NodeConfig) -> String {
    let n = &cfg.node;
    let matched = match &n.net.interface {
        Some(name) => format!("Name={name}"),
        None => format!("MACAddress={}", n.mac),
    };
    let mut unit = format!("[Match]\n{matched}\n\n");
    if let Some(mtu) = n.net.mtu {
        unit.push_str(&format!("[Link]\nMTUBytes={mtu}\n\n"));
    }
    unit.push_str("[Network]\n");
    if n.net.dhcp {
        unit.push_str("DHCP=ipv4\n");
    } else {
        unit.push_str(&format!("Address={}\n", n.address));
        if let Some(gw) = n.net.gateway {
            unit.push_str(&format!("Gateway={gw}\n"));
        }
        for d in &n.net.dns {
            unit.push_str(&format!("DNS={d}\n"));
        }
    }
    unit.push_str("LinkLocalAddressing=no\n");
    if n.net.dhcp {
        // The lease's router and DNS servers, and its MTU only where we set none.
        unit.push_str("\n[DHCPv4]\nUseDNS=yes\nUseRoutes=yes\n");
    }
    unit
}

/// Where the member's certificates go on Container Linux. Flatcar's
/// etcd-wrapper mounts `$ETCD_SSL_DIR` at `/etc/ssl/certs` in etcd's
/// container, so the flags name them there.
const ETCD_SSL_DIR: &str = "/etc/ssl/etcd";
const ETCD_SSL_IN_CONTAINER: &str = "/etc/ssl/certs";
/// The etcd user and group of Flatcar's base layout.
const FLATCAR_ETCD_ID: u32 = 232;

/// Flatcar's etcd-member.service reads its flags from ETCD_* variables: the
/// same command line the agent gives the etcd it runs in the image, each
/// `--flag=value` as `ETCD_FLAG=value`, with the files where etcd-wrapper
/// mounts them.
fn etcd_member_dropin(m: &EtcdMember, tls: bool) -> String {
    let files = tls.then(|| TlsFiles::in_dir(Path::new(ETCD_SSL_IN_CONTAINER)));
    let mut s = String::from("[Service]\n");
    // Flatcar's etcd-member bootstraps the static initial cluster.
    for arg in etcd::args(m, &Paths::default(), files.as_ref(), etcd::ClusterState::New) {
        let flag = arg.trim_start_matches("--");
        let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
        if name == "trusted-ca-file" {
            // The wrapper's own variable: which host directory it mounts.
            s.push_str(&format!("Environment=\"ETCD_SSL_DIR={ETCD_SSL_DIR}\"\n"));
        }
        s.push_str(&format!("Environment=\"ETCD_{}={value}\"\n", name.to_uppercase().replace('-', "_")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use crate::pki::test_pki;
    use crate::plan::{plan, Selection};
    use crate::testutil::assert_golden;

    /// A stand-in payload keeps the goldens about our format, not the agent's bytes.
    const AGENT: &[u8] = b"\x7fELF stand-in agent\n";

    /// Stand-in CNI plugins, as the build passes them for nodes with pods.
    fn cni_for(p: &NodePlan) -> Vec<Program> {
        if !p.node.role.has_pods() {
            return Vec::new();
        }
        ["bridge", "loopback"]
            .map(|n| {
                let bytes = format!("\x7fELF stand-in {n}\n").into_bytes();
                Program { name: n.into(), artifact: format!("cni-{n}"), inline: Payload::inline(&bytes), bytes }
            })
            .to_vec()
    }

    fn plan_for(node: &str) -> NodePlan {
        let sel = Selection { node: Some(node.into()), ..Default::default() };
        plan(&Cluster::embedded_default(), &sel, Some(&test_pki())).unwrap().remove(0)
    }

    #[test]
    fn golden_per_role() {
        for node in ["etcd-1", "master-1", "worker-1"] {
            let p = plan_for(node);
            let agent = AgentDelivery::Embedded(&Payload::inline(AGENT));
            let text = String::from_utf8(render(&p, &agent, &cni_for(&p))).unwrap();
            assert_golden(&format!("golden/ignition/{node}.ign"), &text);
            assert_golden(&format!("golden/node-config/{node}.json"), &config_json(&p.config));
        }
    }

    #[test]
    fn golden_remote_agent() {
        let p = plan_for("worker-1");
        let delivery = AgentDelivery::Remote { base_url: "http://10.0.2.2:8080/assets/", bytes: AGENT, token: None };
        let text = String::from_utf8(render(&p, &delivery, &cni_for(&p))).unwrap();
        assert_golden("golden/ignition/worker-1-remote.ign", &text);
        assert!(text.contains("\"source\": \"http://10.0.2.2:8080/assets/worker-1/node-agent\""));
        assert!(text.contains("\"source\": \"http://10.0.2.2:8080/assets/worker-1/cni-bridge\""));
    }

    /// systemd-networkd units for each way a node is addressed, and the
    /// node config that carries it.
    #[test]
    fn golden_addressing() {
        let text = crate::cluster::DEFAULT_TOML
            .replace("subnet_len = 24\n", "subnet_len = 24\ngateway = \"172.17.8.1\"\ndns = [\"172.17.8.1\"]\n")
            .replace("ip = \"172.17.8.103\"", "ip = \"dhcp\"\ninterface = \"eno1\"\nmtu = 9000")
            .replace("ip = \"172.17.8.104\"", "ip = \"172.17.8.104\"\ndns = [\"1.1.1.1\", \"9.9.9.9\"]\nmtu = 1450");
        let cluster = crate::cluster::parse(&text, "c.toml").unwrap();
        for node in ["etcd-1", "worker-1", "worker-2"] {
            let sel = Selection { node: Some(node.into()), ..Default::default() };
            let p = plan(&cluster, &sel, Some(&test_pki())).unwrap().remove(0);
            assert_golden(&format!("golden/networkd/{node}.network"), &node_network_unit(&p.config));
            if node == "worker-1" {
                let json = config_json(&p.config);
                assert_golden("golden/node-config/worker-1-dhcp.json", &json);
                assert_eq!(NodeConfig::parse(json.as_bytes()).unwrap(), p.config);
            }
        }
    }

    #[test]
    fn config_json_round_trips() {
        let p = plan_for("worker-2");
        assert_eq!(NodeConfig::parse(config_json(&p.config).as_bytes()).unwrap(), p.config);
    }
}
