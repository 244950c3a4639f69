//! Container images built here, so no registry is ever needed: an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) in one tar, as
//! `ctr images import` takes it. The pod sandbox (pause) image is one: the
//! static agent as `/pause`, run as `/pause pause`. Same inputs, same bytes:
//! every tar header is fixed (mtime, owner, order) and nothing in the JSON
//! depends on time or place.

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The pause image's name, which `sandbox_image` names; the tag is the
/// agent's digest, so a new agent is a new image.
pub fn pause_reference(agent: &[u8]) -> String {
    format!("imgbuild.local/pause:{}", &hex::encode(Sha256::digest(agent))[..16])
}

/// The pod sandbox image for `agent` (the agent binary's bytes).
pub fn pause_image(agent: &[u8]) -> Image {
    Image {
        name: pause_reference(agent),
        files: vec![("pause".into(), 0o755, agent.to_vec())],
        entrypoint: vec!["/pause".into(), "pause".into()],
        user: "65535:65535".into(),
    }
}

/// A one-layer image of regular files.
pub struct Image {
    /// The full reference containerd gives it on import.
    pub name: String,
    /// Path in the root (no leading `/`), mode, bytes.
    pub files: Vec<(String, u32, Vec<u8>)>,
    pub entrypoint: Vec<String>,
    pub user: String,
}

/// One content-addressed blob, its digest taken once.
pub struct Blob {
    media_type: &'static str,
    pub bytes: Vec<u8>,
    hex: String,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        let hex = hex::encode(Sha256::digest(&bytes));
        Blob { media_type, bytes, hex }
    }

    /// The hex sha256, as the blob's file name in a content store.
    pub fn hex_digest(&self) -> &str {
        &self.hex
    }

    fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len() })
    }
}

/// An image as blobs, with the name it is imported under.
pub struct Layout {
    pub name: String,
    /// Layer, config and manifest, in that order.
    pub blobs: [Blob; 3],
}

impl Image {
    /// The image's blobs, built and hashed once.
    pub fn layout(&self) -> Result<Layout> {
        // Uncompressed: the layer's digest is its diff ID, and bytes never
        // depend on a compressor's version.
        let entries: Vec<(&str, u32, &[u8])> =
            self.files.iter().map(|(n, m, b)| (n.as_str(), *m, b.as_slice())).collect();
        let layer = Blob::new("application/vnd.oci.image.layer.v1.tar", tar(&entries)?);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Entrypoint": self.entrypoint, "User": self.user },
            "rootfs": { "type": "layers", "diff_ids": [layer.digest()] },
        });
        let config = Blob::new("application/vnd.oci.image.config.v1+json", to_json(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        });
        let manifest = Blob::new("application/vnd.oci.image.manifest.v1+json", to_json(&manifest));
        Ok(Layout { name: self.name.clone(), blobs: [layer, config, manifest] })
    }

    /// Layer, config and manifest, in that order.
    pub fn blobs(&self) -> Result<[Blob; 3]> {
        Ok(self.layout()?.blobs)
    }

    /// The image layout tar.
    pub fn layout_tar(&self) -> Result<Vec<u8>> {
        self.layout()?.tar()
    }
}

impl Layout {
    /// The image layout tar, as `ctr images import` takes it.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let [layer, config, manifest] = &self.blobs;
        let mut entry = manifest.descriptor();
        entry["annotations"] = json!({
            "io.containerd.image.name": self.name,
            "org.opencontainers.image.ref.name": self.name.rsplit(':').next().unwrap_or_default(),
        });
        let index =
            json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry] });
        let (oci_layout, index) = (to_json(&json!({ "imageLayoutVersion": "1.0.0" })), to_json(&index));
        let mut files: Vec<(String, &[u8])> = vec![("oci-layout".into(), &oci_layout), ("index.json".into(), &index)];
        for b in [layer, config, manifest] {
            files.push((format!("blobs/sha256/{}", b.hex), &b.bytes));
        }
        files.sort();
        let entries: Vec<(&str, u32, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), 0o644, *b)).collect();
        tar(&entries)
    }
}

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialize")
}

/// A tar of regular files with fixed headers (root-owned, mtime 0), in the
/// order given.
fn tar(files: &[(&str, u32, &[u8])]) -> Result<Vec<u8>> {
    let mut t = tar::Builder::new(Vec::new());
    for (name, mode, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, name, *bytes)?;
    }
    Ok(t.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout as the OCI image spec has it, the same bytes every time,
    /// and a new agent a new image.
    #[test]
    fn layout_is_complete_and_reproducible() {
        let a = pause_image(b"agent one").layout_tar().unwrap();
        assert_eq!(a, pause_image(b"agent one").layout_tar().unwrap());
        assert_ne!(pause_reference(b"agent one"), pause_reference(b"agent two"));
        let mut names = Vec::new();
        let mut index = String::new();
        let mut ar = tar::Archive::new(a.as_slice());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "index.json" {
                std::io::Read::read_to_string(&mut e, &mut index).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(
            names.contains(&"oci-layout".to_owned()) && names.iter().filter(|n| n.starts_with("blobs/")).count() == 3
        );
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["io.containerd.image.name"], pause_reference(b"agent one"));
        assert!(names.contains(&format!("blobs/sha256/{}", &m["digest"].as_str().unwrap()[7..])));
        let blobs = pause_image(b"agent one").blobs().unwrap();
        assert_eq!(&m["digest"].as_str().unwrap()[7..], blobs[2].hex_digest());
    }
}
