//! The pods file `imgbuild policy test` evaluates policies against:
//! `namespaces: {NAME: {LABELS}}` and `pods: [{namespace, name, ip, labels,
//! ports: [{name, port, protocol}]}]`, YAML or JSON.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::model::{Labels, Protocol};
use crate::Invalid;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodsFile {
    #[serde(default)]
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// Parses a pods file; each pod is unique by namespace and name, and each
/// port is 1 to 65535 with a valid name.
pub fn parse_pods(text: &str, origin: &str) -> Result<PodsFile, Invalid> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| Invalid::new(origin, "", format!("not JSON: {e}")))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| Invalid::new(origin, "", format!("not YAML: {e}")))?
    };
    let file: PodsFile = serde_path_to_error::deserialize(value)
        .map_err(|e| Invalid::new(origin, e.path().to_string(), e.inner().to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in file.pods.iter().enumerate() {
        if !seen.insert(p.id()) {
            return Err(Invalid::new(origin, format!("pods[{i}]"), format!("{} is listed twice", p.id())));
        }
        for (j, port) in p.ports.iter().enumerate() {
            let at = format!("pods[{i}].ports[{j}]");
            if port.port == 0 {
                return Err(Invalid::new(origin, format!("{at}.port"), "0 is not a port (1 to 65535)"));
            }
            if let Some(name) = port.name.as_deref().filter(|n| !crate::load::is_port_name(n)) {
                return Err(Invalid::new(origin, format!("{at}.name"), format!("{name:?} is not a port name")));
            }
        }
    }
    Ok(file)
}
