//! What users add to the Ignition configs imgbuild writes: their own
//! Ignition configs (`[ignition] merge`, per role, per node), merged by
//! Ignition itself, and SSH keys for Flatcar's `core` user (`[access]`).
//! Each fragment is read once, checked, and taken to spec 3.3.0 (what
//! NODE.ign declares; 3.x minor versions only add fields, so a 3.0-3.2
//! config is a 3.3 config with another version string).

use std::path::Path;

use serde_json::Value;

use crate::error::InputError;

/// A user's Ignition config, as it will be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The file, as errors name it.
    pub origin: String,
    /// The config at spec 3.3.0, compact JSON.
    pub bytes: Vec<u8>,
    /// What it writes: paths, units, drop-ins, users.
    pub claims: Vec<Claim>,
}

/// One thing a config writes, and where it says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `storage.files[2].path`, ...
    pub field: String,
    /// `path /etc/hostname`, `unit node-agent.service`,
    /// `dropin etcd-member.service/20-imgbuild.conf`, `user core`.
    pub key: String,
}

/// Reads fragment `written` (relative to `base`); `field` names where the
/// cluster file lists it.
pub fn load(base: &Path, written: &str, cluster_origin: &str, field: &str) -> Result<Fragment, InputError> {
    let path = base.join(written);
    let origin = path.display().to_string();
    let bytes = std::fs::read(&path)
        .map_err(|e| InputError::new(cluster_origin, field, format!("cannot read {origin}: {e}")))?;
    let bad = |reason: String| InputError::new(&origin, "", reason);
    use ignition_config::Config;
    let (parsed, _) = Config::parse_slice(&bytes).map_err(|e| bad(format!("not an Ignition config: {e}")))?;
    if !matches!(parsed, Config::V3_0(_) | Config::V3_1(_) | Config::V3_2(_) | Config::V3_3(_)) {
        return Err(bad("imgbuild merges Ignition specs 3.0.0 to 3.3.0, the version of NODE.ign".into()));
    }
    let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    v["ignition"]["version"] = imgbuild_ignition::SPEC_VERSION.into();
    let bytes = serde_json::to_vec(&v).expect("a JSON value serializes");
    Config::parse_slice(&bytes).map_err(|e| bad(format!("not valid as spec 3.3.0: {e}")))?;
    Ok(Fragment { origin, claims: claims(&v), bytes })
}

/// What a config (as JSON) writes. Units count when the config sets their
/// contents or state, not when it only adds a drop-in.
pub fn claims(v: &Value) -> Vec<Claim> {
    let mut out = Vec::new();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for kind in ["files", "directories", "links"] {
        for (i, e) in list(&v["storage"][kind]).iter().enumerate() {
            out.push(Claim { field: format!("storage.{kind}[{i}].path"), key: format!("path {}", s(&e["path"])) });
        }
    }
    for (i, u) in list(&v["systemd"]["units"]).iter().enumerate() {
        let name = s(&u["name"]);
        if ["contents", "enabled", "mask"].iter().any(|k| !u[*k].is_null()) {
            out.push(Claim { field: format!("systemd.units[{i}]"), key: format!("unit {name}") });
        }
        for (j, d) in list(&u["dropins"]).iter().enumerate() {
            let key = format!("dropin {name}/{}", s(&d["name"]));
            out.push(Claim { field: format!("systemd.units[{i}].dropins[{j}]"), key });
        }
    }
    for (i, u) in list(&v["passwd"]["users"]).iter().enumerate() {
        out.push(Claim { field: format!("passwd.users[{i}]"), key: format!("user {}", s(&u["name"])) });
    }
    out
}

/// An OpenSSH public key line: a known type, its base64 key, an optional
/// comment; one line (a newline would add a key of the writer's choosing).
pub fn check_ssh_key(key: &str) -> Result<(), String> {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    if key.chars().any(char::is_control) {
        return Err("holds a line break or control character".into());
    }
    let mut words = key.split(' ');
    let kind = words.next().unwrap_or_default();
    if !TYPES.contains(&kind) && kind != "sk-ecdsa-sha2-nistp256@openssh.com" {
        return Err(format!("{kind:?} is not an OpenSSH public key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-...)"));
    }
    use base64::Engine;
    let blob = words.next().unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(blob) {
        Ok(b) if b.len() >= 4 + kind.len() && b[4..4 + kind.len()] == *kind.as_bytes() => Ok(()),
        _ => Err(format!("the key after {kind:?} is not a base64 {kind} key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_paths_units_dropins_and_users() {
        let v: Value = serde_json::from_str(
            r#"{"storage":{"files":[{"path":"/a"}],"links":[{"path":"/b"}]},
                "systemd":{"units":[{"name":"x.service","dropins":[{"name":"10.conf"}]},{"name":"y.service","enabled":true}]},
                "passwd":{"users":[{"name":"core"}]}}"#,
        )
        .unwrap();
        let keys: Vec<String> = claims(&v).into_iter().map(|c| format!("{} {}", c.field, c.key)).collect();
        assert_eq!(
            keys,
            [
                "storage.files[0].path path /a",
                "storage.links[0].path path /b",
                "systemd.units[0].dropins[0] dropin x.service/10.conf",
                "systemd.units[1] unit y.service",
                "passwd.users[0] user core",
            ]
        );
    }

    #[test]
    fn ssh_keys() {
        let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxT1t2I1nLlYkJ3sCSEPtVXr3H4GcEgqJtyrqTmC8Uh me@laptop";
        assert!(check_ssh_key(ed).is_ok());
        assert!(check_ssh_key(&ed.replace(" me@laptop", "")).is_ok());
        for bad in [
            &format!("{ed}\nssh-ed25519 AAAA evil"),
            "ssh-dss AAAA",
            "ssh-ed25519 not-base64!",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGxT",
        ] {
            assert!(check_ssh_key(bad).is_err(), "{bad}");
        }
    }
}
