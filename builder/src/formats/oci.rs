//! The pod sandbox (pause) image, built here so no registry is ever needed:
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) in one
//! tar, as `ctr images import` and containerd's CRI take it. Its one layer
//! holds the static agent as `/pause`, run as `/pause pause`. Same agent,
//! same bytes: every tar header is fixed (mtime, owner, order) and nothing
//! in the JSON depends on time or place.

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The name containerd gives the image on import, and what `sandbox_image`
/// names; the tag is the agent's digest, so a new agent is a new image.
pub fn reference(agent: &[u8]) -> String {
    format!("imgbuild.local/pause:{}", &hex::encode(Sha256::digest(agent))[..16])
}

/// One content-addressed blob.
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

impl Blob {
    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.bytes)))
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len() })
    }
}

/// The image layout tar for `agent`.
pub fn pause_image(agent: &[u8]) -> Result<Vec<u8>> {
    // Uncompressed: the layer's digest is its diff ID, and bytes never
    // depend on a compressor's version.
    let layer = Blob { media_type: "application/vnd.oci.image.layer.v1.tar", bytes: tar(&[("pause", 0o755, agent)])? };
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/pause", "pause"], "User": "65535:65535" },
        "rootfs": { "type": "layers", "diff_ids": [layer.digest()] },
    });
    let config = Blob { media_type: "application/vnd.oci.image.config.v1+json", bytes: to_json(&config) };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob { media_type: "application/vnd.oci.image.manifest.v1+json", bytes: to_json(&manifest) };
    let name = reference(agent);
    let mut entry = manifest.descriptor();
    entry["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or_default(),
    });
    let index =
        json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry] });
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("oci-layout".into(), to_json(&json!({ "imageLayoutVersion": "1.0.0" }))),
        ("index.json".into(), to_json(&index)),
    ];
    for b in [&layer, &config, &manifest] {
        files.push((format!("blobs/sha256/{}", &b.digest()["sha256:".len()..]), b.bytes.clone()));
    }
    files.sort();
    let entries: Vec<(&str, u32, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), 0o644, b.as_slice())).collect();
    tar(&entries)
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
        let a = pause_image(b"agent one").unwrap();
        assert_eq!(a, pause_image(b"agent one").unwrap());
        assert_ne!(reference(b"agent one"), reference(b"agent two"));
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
        assert_eq!(m["annotations"]["io.containerd.image.name"], reference(b"agent one"));
        assert!(names.contains(&format!("blobs/sha256/{}", &m["digest"].as_str().unwrap()[7..])));
    }
}
