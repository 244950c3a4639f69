//! The pods file `imgbuild policy test` evaluates policies against:
//! `namespaces: {NAME: {LABELS}}` and `pods: [{namespace, name, ip, labels,
//! ports: [{name, port, protocol}]}]`, YAML or JSON.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Labels, Protocol};
use crate::strict::Strict;
use crate::Invalid;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodsFile {
    #[serde(default)]
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub ports: Vec<PodPort>,
}

/// A container port, by which named ports in policies resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn default_namespace() -> String {
    "default".into()
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

impl Pod {
    /// `NAMESPACE/NAME`, as the test's output names pods.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Reads and parses a pods file (a regular file, bounded in size).
pub fn load_pods(path: &std::path::Path) -> Result<PodsFile, Invalid> {
    let origin = path.display().to_string();
    let text = crate::strict::read_file(path).map_err(|r| Invalid::new(&origin, "", r))?;
    parse_pods(&text, &origin)
}

/// Parses a pods file (JSON when `origin` ends in `.json`, else YAML): names
/// as Kubernetes allows them, labels valid, each pod and each IP once, each
/// port 1 to 65535 with a valid name given once per pod.
pub fn parse_pods(text: &str, origin: &str) -> Result<PodsFile, Invalid> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    crate::strict::check_depth(text).map_err(|r| Invalid::new(origin, "", r))?;
    let value = if origin.to_ascii_lowercase().ends_with(".json") {
        serde_json::from_str::<Strict>(text).map_err(|e| Invalid::new(origin, "", format!("not JSON: {e}")))?
    } else {
        serde_yaml_ng::from_str::<Strict>(text).map_err(|e| Invalid::new(origin, "", format!("not YAML: {e}")))?
    };
    let file: PodsFile = serde_path_to_error::deserialize(value.0)
        .map_err(|e| Invalid::new(origin, e.path().to_string(), e.inner().to_string()))?;
    check_pods(&file).map_err(|(field, reason)| Invalid::new(origin, field, reason))?;
    Ok(file)
}

pub(crate) fn check_pods(file: &PodsFile) -> Result<(), (String, String)> {
    use crate::load::{check_label, check_name};
    for (ns, labels) in &file.namespaces {
        check_name(ns, &format!("namespaces.{ns}"))?;
        for (k, v) in labels {
            check_label(k, v, &format!("namespaces.{ns}.{k}"))?;
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut ips = std::collections::BTreeMap::new();
    for (i, p) in file.pods.iter().enumerate() {
        let at = format!("pods[{i}]");
        check_name(&p.namespace, &format!("{at}.namespace"))?;
        check_name(&p.name, &format!("{at}.name"))?;
        for (k, v) in &p.labels {
            check_label(k, v, &format!("{at}.labels.{k}"))?;
        }
        if !ids.insert(p.id()) {
            return Err((at, format!("{} is listed twice", p.id())));
        }
        if let Some(first) = ips.insert(p.ip, i) {
            return Err((format!("{at}.ip"), format!("{} is also pods[{first}]'s address", p.ip)));
        }
        let mut names = std::collections::BTreeSet::new();
        for (j, port) in p.ports.iter().enumerate() {
            let at = format!("{at}.ports[{j}]");
            if port.port == 0 {
                return Err((format!("{at}.port"), "0 is not a port (1 to 65535)".into()));
            }
            if let Some(name) = &port.name {
                if !crate::load::is_port_name(name) {
                    return Err((format!("{at}.name"), format!("{name:?} is not a port name")));
                }
                if !names.insert(name.clone()) {
                    return Err((format!("{at}.name"), format!("{name:?} is given twice")));
                }
            }
        }
    }
    Ok(())
}
