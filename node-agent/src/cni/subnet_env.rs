//! `/run/flannel/subnet.env`, exactly as flanneld writes it.

use std::path::Path;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

pub const FILE: &str = "subnet.env";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    /// flanneld writes the subnet's first host address with the subnet's length.
    pub fn render(&self) -> String {
        let first = Ipv4Net::new(u32::from(self.subnet.network()).wrapping_add(1).into(), self.subnet.prefix_len())
            .expect("valid");
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network, first, self.mtu, self.ipmasq
        )
    }

    /// The subnet a previous run (ours or flanneld's) wrote, if any.
    pub fn previous_subnet(dir: &Path) -> Option<Ipv4Net> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        let value = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
        value.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc())
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        super::write_atomic(&dir.join(FILE), &self.render()).context("writing subnet.env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_and_previous() {
        let env = SubnetEnv {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet: "10.1.5.0/24".parse().unwrap(),
            mtu: 1450,
            ipmasq: true,
        };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SubnetEnv::previous_subnet(dir.path()), None);
        env.write(dir.path()).unwrap();
        assert_eq!(SubnetEnv::previous_subnet(dir.path()), Some(env.subnet));
    }
}
