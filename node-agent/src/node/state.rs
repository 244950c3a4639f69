//! State the agent keeps across restarts: the VTEP MAC, so peers' FDB and
//! neighbour entries stay valid when the agent or the node restarts.

use std::path::Path;

use anyhow::{Context, Result};
use rand::RngCore;

use crate::types::MacAddr;

const VTEP_MAC_FILE: &str = "vtep-mac";

pub fn vtep_mac(state_dir: &Path) -> Result<MacAddr> {
    let path = state_dir.join(VTEP_MAC_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(mac) = text.trim().parse::<MacAddr>() {
            return Ok(mac);
        }
    }
    let mut b = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut b);
    // Locally administered, unicast.
    b[0] = (b[0] | 0x02) & 0xfe;
    let mac = MacAddr(b);
    crate::cni::write_atomic(&path, &format!("{mac}\n")).with_context(|| format!("saving {}", path.display()))?;
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_local() {
        let dir = tempfile::tempdir().unwrap();
        let a = vtep_mac(dir.path()).unwrap();
        assert_eq!(vtep_mac(dir.path()).unwrap(), a);
        assert!(a.is_unicast() && a.0[0] & 0x02 != 0);
    }
}
