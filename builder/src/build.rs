//! `imgbuild --role/--node`: plan the selected nodes, render each node's
//! artifacts in memory, then write each node dir in one step.

use std::path::PathBuf;

use anyhow::Result;

use crate::agent::AgentBinary;
use crate::cluster::Cluster;
use crate::formats::ignition::{self, AgentDelivery};
use crate::formats::manifest::{Entry, Manifest};
use crate::output::{self, Artifact};
use crate::plan::{self, NodePlan, Selection};

/// Everything a build needs, already parsed and validated.
#[derive(Debug)]
pub struct BuildConfig {
    pub cluster: Cluster,
    pub selection: Selection,
    pub out: PathBuf,
    pub agent: AgentBinary,
    pub agent_url: Option<String>,
}

/// What a build wrote, for the summary table.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

pub fn run(cfg: &BuildConfig) -> Result<Vec<Built>> {
    let plans = plan::plan(&cfg.cluster, &cfg.selection)?;
    // Render everything before writing anything: bad input leaves no output.
    let rendered: Vec<(&NodePlan, Vec<Artifact>)> = plans.iter().map(|p| (p, artifacts(cfg, p))).collect();
    rendered
        .into_iter()
        .map(|(p, arts)| {
            let manifest = Manifest::new(
                &p.node.name,
                p.node.role.as_str(),
                arts.iter().map(|a| Entry::of(&a.name, &a.bytes)).collect(),
            );
            let mut all = arts;
            all.push(Artifact::new("manifest.json", manifest.render()));
            let dir = output::write_node_dir(&cfg.out, &p.node.name, &all)?;
            Ok(Built { dir, manifest })
        })
        .collect()
}

/// Every artifact of one node except the manifest.
fn artifacts(cfg: &BuildConfig, p: &NodePlan) -> Vec<Artifact> {
    let name = &p.node.name;
    let delivery = match &cfg.agent_url {
        Some(url) => AgentDelivery::Remote { base_url: url, bytes: &cfg.agent.bytes },
        None => AgentDelivery::Embedded(&cfg.agent.bytes),
    };
    let mut out = vec![Artifact::new(format!("{name}.ign"), ignition::render(p, &delivery))];
    if cfg.agent_url.is_some() {
        // Served beside the config for Ignition to fetch.
        out.push(Artifact { name: "node-agent".into(), bytes: cfg.agent.bytes.clone(), mode: 0o755 });
    }
    out
}

/// The table printed at the end of a build.
pub fn summary(built: &[Built]) -> String {
    let mut s = format!("{:<28} {:>12}  {}\n", "ARTIFACT", "SIZE", "SHA256");
    for b in built {
        for e in &b.manifest.artifacts {
            let path = format!("{}/{}", b.manifest.node, e.file);
            s.push_str(&format!("{path:<28} {:>12}  {}\n", e.size, e.sha256));
        }
    }
    s
}
