//! `imgbuild policy`: Kubernetes NetworkPolicy as the cluster's agents will
//! enforce it (the model and its semantics are the `imgbuild-policy` crate).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use imgbuild_policy::{load_manifests, load_pods, Cluster, Invalid, Protocol};

use crate::error::InputError;

fn input(e: Invalid) -> InputError {
    InputError::new(e.origin, e.field, e.reason)
}

/// `policy test`: writes one line `FROM TO PORT/PROTO allow|deny` per
/// ordered pair of distinct pods and port (`ports`, else each destination's
/// own) to `out`, sorted. Lines are made in order (pods by id, ports by
/// their text; a space sorts before any character of an id), so none is
/// held: the output can be far larger than memory.
pub fn test(pods: &Path, policies: &Path, ports: Option<&[(u16, Protocol)]>, out: &mut dyn Write) -> Result<()> {
    let mut pods_file = load_pods(pods).map_err(input)?;
    let manifests = load_manifests(policies).map_err(input)?;
    let cluster = Cluster::new(manifests.policies, &manifests.namespaces, &pods_file.namespaces);
    pods_file.pods.sort_by_key(|p| p.id());
    let mut out = std::io::BufWriter::new(out);
    for from in &pods_file.pods {
        for to in pods_file.pods.iter().filter(|to| to.id() != from.id()) {
            let own: Vec<(u16, Protocol)> = to.ports.iter().map(|p| (p.port, p.protocol)).collect();
            let mut tested: Vec<(String, u16, Protocol)> = ports
                .map_or(own, <[_]>::to_vec)
                .into_iter()
                .map(|(port, proto)| (format!("{port}/{}", proto.as_str()), port, proto))
                .collect();
            tested.sort();
            tested.dedup();
            for (text, port, proto) in tested {
                let v = cluster.verdict(from, to, port, proto);
                writeln!(out, "{} {} {text} {}", from.id(), to.id(), v.as_str()).context("writing the verdicts")?;
            }
        }
    }
    out.flush().context("writing the verdicts")
}
