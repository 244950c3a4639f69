//! State the agent keeps across restarts: the VTEP MAC, so peers' FDB and
//! neighbour entries stay valid when the agent or the node restarts.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::NodeConfig;
use crate::types::MacAddr;

const VTEP_MAC_FILE: &str = "vtep-mac";

/// The VTEP MAC: the one saved in `state_dir` (kept from an earlier boot),
/// else one derived from what the node is (cluster, name, interface MAC,
/// VNI), so an image node without a disk, whose state is lost at every
/// boot, comes back with the same MAC and peers keep their FDB entries.
pub fn vtep_mac(state_dir: &Path, cfg: &NodeConfig) -> Result<MacAddr> {
    let path = state_dir.join(VTEP_MAC_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(mac) = text.trim().parse::<MacAddr>() {
            return Ok(mac);
        }
    }
    let mac = derived_vtep_mac(cfg);
    crate::cni::write_atomic(&path, &format!("{mac}\n")).with_context(|| format!("saving {}", path.display()))?;
    Ok(mac)
}

fn derived_vtep_mac(cfg: &NodeConfig) -> MacAddr {
    let what =
        format!("imgbuild-vtep\0{}\0{}\0{}\0{}", cfg.cluster, cfg.node.name, cfg.node.mac, cfg.network.backend.vni);
    let h = Sha256::digest(what.as_bytes());
    let mut b = [0u8; 6];
    b.copy_from_slice(&h[..6]);
    // Locally administered, unicast.
    b[0] = (b[0] | 0x02) & 0xfe;
    MacAddr(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> NodeConfig {
        let text = format!(
            r#"{{"cluster":"c","node":{{"name":"{name}","role":"worker","address":"172.17.8.103/24","mac":"52:54:00:00:00:01"}},
                "etcd":{{"endpoints":["http://127.0.0.1:2379"]}},
                "network":{{"network":"10.1.0.0/16","subnet_len":24,"backend":{{"type":"vxlan","vni":1,"port":8472}}}}}}"#
        );
        NodeConfig::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn stable_local_and_the_same_after_the_state_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let a = vtep_mac(dir.path(), &config("w1")).unwrap();
        assert_eq!(vtep_mac(dir.path(), &config("w1")).unwrap(), a);
        assert!(a.is_unicast() && a.0[0] & 0x02 != 0);
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(vtep_mac(fresh.path(), &config("w1")).unwrap(), a, "a disk-less reboot keeps the MAC");
        assert_ne!(vtep_mac(tempfile::tempdir().unwrap().path(), &config("w2")).unwrap(), a);
        // A MAC saved by an earlier version (random) is kept.
        std::fs::write(fresh.path().join(VTEP_MAC_FILE), "0a:00:00:00:00:07\n").unwrap();
        assert_eq!(vtep_mac(fresh.path(), &config("w1")).unwrap().to_string(), "0a:00:00:00:00:07");
    }
}
