//! `manifest.json`: every artifact of a node with its size and sha256.

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub node: String,
    pub role: String,
    /// The node's MAC, by which `imgbuild serve` picks the node.
    pub mac: String,
    /// The machine's SMBIOS UUID, by which `serve` picks it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub artifacts: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Entry {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

impl Entry {
    pub fn of(file: &str, bytes: &[u8]) -> Self {
        Entry { file: file.to_owned(), size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) }
    }
}

impl Manifest {
    /// Artifacts are listed by file name so the manifest is reproducible.
    pub fn new(node: &str, role: &str, mac: &str, mut artifacts: Vec<Entry>) -> Self {
        artifacts.sort_by(|a, b| a.file.cmp(&b.file));
        Manifest { node: node.to_owned(), role: role.to_owned(), mac: mac.to_owned(), uuid: None, artifacts }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest always serializes");
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_golden_and_sorted() {
        let m = Manifest::new(
            "worker-1",
            "worker",
            "52:54:00:13:02:9f",
            vec![Entry::of("vmlinuz", b"kernel"), Entry::of("cmdline", b"console=ttyS0\n")],
        );
        crate::testutil::assert_golden("golden/manifest.json", &String::from_utf8(m.render()).unwrap());
    }
}
