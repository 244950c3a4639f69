//! `imgbuild policy`: Kubernetes NetworkPolicy as the cluster's agents will
//! enforce it (the model and its semantics are the `imgbuild-policy` crate).

use std::path::Path;

use anyhow::Result;
use imgbuild_policy::{load_manifests, parse_pods, Cluster, Invalid, Protocol};

use crate::error::InputError;

fn input(e: Invalid) -> InputError {
    InputError::new(e.origin, e.field, e.reason)
}

/// `policy test`: one line `FROM TO PORT/PROTO allow|deny` per ordered pair
/// of distinct pods and port (`ports`, else each destination's own), sorted.
pub fn test(pods: &Path, policies: &Path, ports: Option<&[(u16, Protocol)]>) -> Result<String> {
    let text =
        std::fs::read_to_string(pods).map_err(|e| InputError::new(pods.display().to_string(), "", e.to_string()))?;
    let pods_file = parse_pods(&text, &pods.display().to_string()).map_err(input)?;
    let manifests = load_manifests(policies).map_err(input)?;
    let cluster = Cluster::new(manifests.policies, &manifests.namespaces, &pods_file.namespaces);
    let mut lines = Vec::new();
    for from in &pods_file.pods {
        for to in pods_file.pods.iter().filter(|to| to.id() != from.id()) {
            let own: Vec<(u16, Protocol)> = to.ports.iter().map(|p| (p.port, p.protocol)).collect();
            let mut tested = ports.map_or(own, <[_]>::to_vec);
            tested.sort();
            tested.dedup();
            for (port, proto) in tested {
                let v = cluster.verdict(from, to, port, proto);
                lines.push(format!("{} {} {port}/{} {}", from.id(), to.id(), proto.as_str(), v.as_str()));
            }
        }
    }
    lines.sort();
    Ok(lines.into_iter().map(|l| l + "\n").collect())
}
