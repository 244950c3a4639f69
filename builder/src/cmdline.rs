//! The command line: clap types only, turned into the config structs the
//! library runs from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use node_config::Role;

use crate::image::initramfs::Compression;
use crate::sources::SourceSpec;

#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Builds bootable Kubernetes nodes from one cluster file",
    help_expected = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Write the embedded default cluster as an editable cluster file.
    Init(InitArgs),
    /// Build every node and boot the whole cluster in QEMU on this machine.
    Up(UpArgs),
    /// Stop a cluster that `up` started.
    Down(DownArgs),
    /// Serve what imgbuild built, for PXE (iPXE) and cloud boot, by MAC.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The build output to serve.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Require each node's token (as `imgbuild --token-secret` put into its
    /// boot URLs) for its iPXE script, config and assets; 403 otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_no_token")]
    pub token_secret: Option<PathBuf>,
    /// Serve files holding a node's private key or token (mode 0600 in the
    /// build) to anyone who names the node's MAC. Without a token secret
    /// they are refused (403): MACs are easy to guess. For labs only.
    #[arg(long)]
    pub insecure_no_token: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster file (default: the embedded reference cluster).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Where to build and keep the cluster's state (`OUT/.up`).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The static node-agent binary to embed (default: beside imgbuild).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// The kernel source, as for a build.
    #[arg(long, value_name = "SRC", value_parser = parse_source)]
    pub kernel: Option<SourceSpec>,
    /// Prove pod-to-pod traffic across the overlay between every pair of
    /// workers, print the report, stop the cluster, and exit 0 only if all passed.
    #[arg(long)]
    pub check: bool,
    /// The cluster's etcd CA (`ca.key`, `ca.crt`): created there on first
    /// use, reused after (default: $XDG_DATA_HOME/imgbuild/pki/CLUSTER, i.e.
    /// ~/.local/share/imgbuild/pki/CLUSTER). Every node's certificates derive
    /// from it, so the same CA gives the same bytes.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// How long to wait for readiness (and probes) before giving up, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Memory per VM in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The build output the cluster was started from.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build every node of this role (etcd, master, worker).
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Build only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Build every node of the cluster (as `vagrant/Vagrantfile` wants).
    #[arg(long, conflicts_with_all = ["role", "node"])]
    pub all: bool,
    /// The cluster file (default: the embedded reference cluster).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Where to write the nodes' artifacts.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The static node-agent binary to embed (default: beside imgbuild).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Fetch the agent from this base URL (as `URL/NODE/node-agent`, checked
    /// by sha512) instead of embedding it in the Ignition config.
    #[arg(long, value_name = "URL")]
    pub agent_url: Option<String>,
    /// Also write `NODE.stub.ign`: a small config that merges the full one
    /// from `URL/ignition?mac=MAC` (as `imgbuild serve` answers), sha512-checked.
    #[arg(long, value_name = "URL")]
    pub stub_url: Option<String>,
    /// The cluster's etcd CA (`ca.key`, `ca.crt`): created there on first
    /// use, reused after (default: $XDG_DATA_HOME/imgbuild/pki/CLUSTER, i.e.
    /// ~/.local/share/imgbuild/pki/CLUSTER). Every node's certificates derive
    /// from it, so the same CA gives the same bytes.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// Put a per-node token (HMAC of the node name under this secret file,
    /// mode 0600) into each node's iPXE script and merge stub, as
    /// `imgbuild serve --token-secret` requires.
    #[arg(long, value_name = "FILE")]
    pub token_secret: Option<PathBuf>,
    /// The kernel and its modules: a folder (vmlinuz + lib/modules), a kernel
    /// .deb, apt:PACKAGE, or URL#sha256=HEX (default: the running kernel when
    /// its modules are present, else apt:linux-image-cloud-amd64).
    #[arg(long, value_name = "SRC", value_parser = parse_source)]
    pub kernel: Option<SourceSpec>,
    /// How the initramfs is compressed.
    #[arg(long, value_enum, default_value_t)]
    pub compression: Compression,
    /// Boot verbosely: no `quiet`, and the agent logs debug lines.
    #[arg(long)]
    pub debug_boot: bool,
    /// Also write EFI disk images, NODE.raw and NODE.qcow2.
    #[arg(long)]
    pub disk: bool,
    /// Where the box catalogs (NODE.box.json) say the boxes are: a base URL
    /// serving `/assets/NODE/NODE.box`, as `imgbuild serve` does (default:
    /// `NODE.box`, relative to the catalog).
    #[arg(long, value_name = "URL")]
    pub box_url: Option<String>,
    /// The version the box catalogs give the boxes.
    #[arg(long, value_name = "VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub box_version: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the cluster file.
    #[arg(long, default_value = "cluster.toml")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

fn parse_source(s: &str) -> Result<SourceSpec, String> {
    SourceSpec::parse_flag(s)
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
