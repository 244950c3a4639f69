//! The CNI network config list kubelet (via the container runtime) runs:
//! `bridge` with `host-local` IPAM over our subnet, then `portmap`.

use std::path::Path;

use anyhow::Result;
use ipnet::Ipv4Net;
use serde_json::json;

pub const NETWORK_NAME: &str = "imgbuild";
pub use node_config::layout::CONFLIST_NAME;
/// The Linux bridge the pods of this node attach to.
pub const BRIDGE: &str = "cni0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflist {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    /// host-local's state directory.
    pub ipam_dir: String,
    /// With NetworkPolicy enforced: the agent's policy folder, for the
    /// endpoint plugin chained last.
    pub policy_run_dir: Option<String>,
}

impl Conflist {
    pub fn render(&self) -> String {
        let gateway = std::net::Ipv4Addr::from(u32::from(self.subnet.network()) + 1);
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": BRIDGE,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": self.mtu,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir,
                    "ranges": [[{ "subnet": self.subnet.to_string(), "gateway": gateway.to_string() }]],
                    "routes": [{ "dst": self.network.to_string() }]
                }
            }),
            json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }),
        ];
        if let Some(dir) = &self.policy_run_dir {
            plugins.push(json!({ "type": crate::policy::plugin::NAME, "runDir": dir }));
        }
        let v = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": plugins
        });
        let mut s = serde_json::to_string_pretty(&v).expect("json");
        s.push('\n');
        s
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        super::write_atomic(&dir.join(CONFLIST_NAME), &self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let c = Conflist {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet: "10.1.5.0/24".parse().unwrap(),
            mtu: 1450,
            ipam_dir: "/var/lib/cni/networks".into(),
            policy_run_dir: None,
        };
        testkit::assert_golden!("golden/10-imgbuild.conflist", &c.render());
        let c = Conflist { policy_run_dir: Some("/run/node-agent/policy".into()), ..c };
        testkit::assert_golden!("golden/10-imgbuild-policy.conflist", &c.render());
    }
}
