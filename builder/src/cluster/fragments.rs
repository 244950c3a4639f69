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

/// The largest fragment read: NODE.ign carries it base64-encoded beside
/// the agent, under the image applier's 32 MiB config limit.
pub const MAX_SIZE: u64 = 4 << 20;

/// Reads fragment `written` (relative to `base`); `field` names where the
/// cluster file lists it. It must be a config Ignition takes: no unknown
/// key (Ignition matches keys without regard to case, so a `Storage` we did
/// not read would still be applied), no config of its own to merge or
/// replace (what that writes could not be checked), clean absolute paths,
/// valid modes, unit names and drop-in names, each path once.
pub fn load(base: &Path, written: &str, cluster_origin: &str, field: &str) -> Result<Fragment, InputError> {
    let path = base.join(written);
    let origin = path.display().to_string();
    let bytes = read_bounded(&path)
        .map_err(|e| InputError::new(cluster_origin, field, format!("cannot read {origin}: {e}")))?;
    let bad = |field: &str, reason: String| InputError::new(&origin, field, reason);
    use ignition_config::Config;
    let (parsed, warnings) =
        Config::parse_slice(&bytes).map_err(|e| bad("", format!("not an Ignition config: {e}")))?;
    if !matches!(parsed, Config::V3_0(_) | Config::V3_1(_) | Config::V3_2(_) | Config::V3_3(_)) {
        return Err(bad("", "imgbuild merges Ignition specs 3.0.0 to 3.3.0, the version of NODE.ign".into()));
    }
    if let Some(w) = warnings.first() {
        return Err(bad("", format!("{w} (keys are lower camel case, as Ignition's spec spells them)")));
    }
    let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| bad("", e.to_string()))?;
    v["ignition"]["version"] = imgbuild_ignition::SPEC_VERSION.into();
    let typed = match Config::parse_slice(&serde_json::to_vec(&v).expect("a JSON value serializes")) {
        Ok((Config::V3_3(c), _)) => c,
        Ok(_) => unreachable!("the version was just set"),
        Err(e) => return Err(bad("", format!("not valid as spec 3.3.0: {e}"))),
    };
    if typed.ignition.config.as_ref().is_some_and(|c| c.merge.is_some() || c.replace.is_some()) {
        return Err(bad("ignition.config", "a fragment may not merge or replace configs of its own".into()));
    }
    // What is embedded is what was checked: the typed config, written again.
    let bytes = serde_json::to_vec(&typed).expect("a config serializes");
    let v: Value = serde_json::from_slice(&bytes).expect("just written");
    check_entries(&v).map_err(|(f, r)| bad(&f, r))?;
    Ok(Fragment { origin, claims: claims(&v), bytes })
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(MAX_SIZE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_SIZE {
        return Err(std::io::Error::other(format!("larger than {MAX_SIZE} bytes")));
    }
    Ok(out)
}

/// Ignition's own rules for the entries (it refuses the whole config
/// otherwise, and the node never provisions).
fn check_entries(v: &Value) -> Result<(), (String, String)> {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut seen = std::collections::HashMap::new();
    for kind in ["files", "directories", "links"] {
        for (i, e) in list(&v["storage"][kind]).iter().enumerate() {
            let at = format!("storage.{kind}[{i}]");
            let path = e["path"].as_str().unwrap_or_default();
            if !is_clean_path(path) {
                return Err((format!("{at}.path"), format!("{path:?} is not a clean absolute path")));
            }
            if let Some(first) = seen.insert(path.to_owned(), at.clone()) {
                return Err((format!("{at}.path"), format!("{path} is also {first}")));
            }
            if let Some(mode) = e["mode"].as_i64() {
                if !(0..=0o7777).contains(&mode) {
                    return Err((format!("{at}.mode"), format!("{mode} is not a mode (0 to 07777)")));
                }
            }
        }
    }
    const UNIT_KINDS: [&str; 11] =
        ["service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope"];
    for (i, u) in list(&v["systemd"]["units"]).iter().enumerate() {
        let name = u["name"].as_str().unwrap_or_default();
        let kind_ok = name.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && UNIT_KINDS.contains(&ext));
        if !kind_ok || name.contains('/') {
            return Err((format!("systemd.units[{i}].name"), format!("{name:?} is not a systemd unit name")));
        }
        for (j, d) in list(&u["dropins"]).iter().enumerate() {
            let dn = d["name"].as_str().unwrap_or_default();
            if !dn.ends_with(".conf") || dn.contains('/') || dn.len() <= 5 {
                return Err((
                    format!("systemd.units[{i}].dropins[{j}].name"),
                    format!("{dn:?} is not a drop-in name (NAME.conf)"),
                ));
            }
        }
    }
    Ok(())
}

/// An absolute path as Ignition wants it: no empty, `.` or `..` parts, no
/// trailing `/`.
pub fn is_clean_path(p: &str) -> bool {
    p.len() > 1 && p.starts_with('/') && p[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether `a` is a folder above `b` (`/opt` above `/opt/bin/x`).
pub fn is_above(a: &str, b: &str) -> bool {
    b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
}

/// What a config (as JSON) writes. Units count when the config sets their
/// contents or state, not when it only adds a drop-in.
pub fn claims(v: &Value) -> Vec<Claim> {
    let mut out = Vec::new();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for kind in ["files", "directories", "links"] {
        for (i, e) in list(&v["storage"][kind]).iter().enumerate() {
            let (field, path) = (format!("storage.{kind}[{i}].path"), s(&e["path"]));
            // A drop-in written as a file is a drop-in all the same.
            let unit = path.strip_prefix("/etc/systemd/system/").and_then(|p| p.split_once(".d/")).map(|(u, _)| u);
            if let Some(unit) = unit.filter(|u| !u.contains('/')) {
                out.push(Claim { field: field.clone(), key: format!("dropin-on {unit}") });
            }
            out.push(Claim { field, key: format!("path {path}") });
        }
    }
    for (i, u) in list(&v["systemd"]["units"]).iter().enumerate() {
        let name = s(&u["name"]);
        if ["contents", "enabled", "mask"].iter().any(|k| !u[*k].is_null()) {
            out.push(Claim { field: format!("systemd.units[{i}]"), key: format!("unit {name}") });
            // Ignition writes the unit's file there: the same as a file entry.
            let path = format!("path /etc/systemd/system/{name}");
            out.push(Claim { field: format!("systemd.units[{i}]"), key: path });
        }
        for (j, d) in list(&u["dropins"]).iter().enumerate() {
            let field = format!("systemd.units[{i}].dropins[{j}]");
            out.push(Claim { field: field.clone(), key: format!("dropin {name}/{}", s(&d["name"])) });
            out.push(Claim {
                field: field.clone(),
                key: format!("path /etc/systemd/system/{name}.d/{}", s(&d["name"])),
            });
            // Any drop-in on a unit we write changes it.
            out.push(Claim { field, key: format!("dropin-on {name}") });
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
    if key.len() > 16 * 1024 {
        return Err("longer than 16 KiB".into());
    }
    use base64::Engine;
    let blob = words.next().unwrap_or_default();
    let bad = || format!("the key after {kind:?} is not a whole base64 {kind} key");
    let b = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| bad())?;
    let fields = wire_strings(&b).ok_or_else(bad)?;
    // SSH's wire format: the type again, then the key's own parts.
    let whole = match kind {
        "ssh-ed25519" => fields.len() == 2 && fields[1].len() == 32,
        "ssh-rsa" => fields.len() == 3 && fields[2].len() >= 128,
        "sk-ssh-ed25519@openssh.com" => fields.len() == 3 && fields[1].len() == 32,
        _ => fields.len() >= 3 && fields[2].len() >= 32,
    };
    if fields.first().is_some_and(|t| *t == kind.as_bytes()) && whole {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The length-prefixed strings a key blob is made of; `None` if the blob
/// does not split into them exactly.
fn wire_strings(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        out.push(b.get(4..4 + len)?);
        b = &b[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drop-in written as a plain file changes its unit as much as one
    /// given as a drop-in.
    #[test]
    fn a_dropin_file_claims_its_unit() {
        let v: Value = serde_json::from_str(
            r#"{"storage":{"files":[{"path":"/etc/systemd/system/containerd.service.d/99-x.conf"},
                                    {"path":"/etc/systemd/system/a/b.d/c"}]}}"#,
        )
        .unwrap();
        let keys: Vec<String> = claims(&v).into_iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            [
                "dropin-on containerd.service",
                "path /etc/systemd/system/containerd.service.d/99-x.conf",
                "path /etc/systemd/system/a/b.d/c"
            ]
        );
    }

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
                "systemd.units[0].dropins[0] path /etc/systemd/system/x.service.d/10.conf",
                "systemd.units[0].dropins[0] dropin-on x.service",
                "systemd.units[1] unit y.service",
                "systemd.units[1] path /etc/systemd/system/y.service",
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
