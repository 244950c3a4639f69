//! The command line: clap types only. Flags several commands share are
//! defined once (`Inputs`, `OutDir`, `Verbosity`) and flattened where used;
//! `commands` turns them into the config structs the library runs from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use node_config::Role;

use crate::build::Output;
use crate::image::initramfs::Compression;
use crate::sources::SourceSpec;

/// imgbuild's version, with the git commit it was built from when known
/// (see `build.rs`).
pub const VERSION: &str = env!("BUILD_VERSION");

const EXAMPLES: &str = "\
Examples:
  imgbuild --role worker                       build the reference cluster's workers into out/
  imgbuild init && imgbuild --all --cluster cluster.toml
                                               edit your own cluster file, build every node
  imgbuild --node worker-1 --only ignition     just out/worker-1/worker-1.ign (for Flatcar)
  sudo imgbuild up --check                     boot the whole cluster in QEMU and prove the overlay
  imgbuild serve --listen 0.0.0.0:8080 --token-secret secret
                                               serve a build for PXE and cloud boot
  imgbuild completions bash > /etc/bash_completion.d/imgbuild

Environment:
  IMGBUILD_AGENT      the static node-agent to embed (as --agent)
  IMGBUILD_CACHE      where downloads and derived files are cached (as --cache;
                      default $XDG_CACHE_HOME/imgbuild, i.e. ~/.cache/imgbuild)
  XDG_DATA_HOME       the default --pki is $XDG_DATA_HOME/imgbuild/pki/CLUSTER
  SOURCE_DATE_EPOCH   the initramfs entries' mtime (default 0)
  IMGBUILD_TIMINGS=1  one stderr line per build phase (as -v)

Exit status: 0 done, 1 failed, 2 bad usage or bad input (one line naming the
file, field and reason; nothing written).";

#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version = VERSION,
    about = "Builds bootable Kubernetes nodes from one cluster file",
    long_about = "Builds bootable Kubernetes nodes from one cluster file: per node a Flatcar / Container Linux \
                  Ignition config, a unikernel-style image (kernel + initramfs whose PID 1 is node-agent), an \
                  iPXE script, a Vagrant box and optionally EFI disk images.",
    after_help = EXAMPLES,
    help_expected = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Write the embedded default cluster as an editable cluster file.
    Init(InitArgs),
    /// Build every node and boot the whole cluster in QEMU on this machine (needs root).
    Up(UpArgs),
    /// Stop a cluster that `up` started (needs root).
    Down(DownArgs),
    /// Serve what imgbuild built, for PXE (iPXE) and cloud boot, by MAC.
    Serve(ServeArgs),
    /// Kubernetes NetworkPolicy: check what policies allow, store them in etcd.
    Policy(PolicyArgs),
    /// The cluster's etcd: members, adding and removing them, snapshots.
    Etcd {
        #[command(subcommand)]
        cmd: EtcdCmd,
    },
    /// The cluster CA: rotating node keys and the CA itself.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// Print a shell completion script for imgbuild.
    Completions(CompletionsArgs),
    /// Print imgbuild's man page (roff).
    #[command(hide = true)]
    Man,
}

impl Cli {
    /// Parses the command line (exiting on a usage error, status 2). A
    /// build's flags and a subcommand do not mix; `-q`/`-v` go anywhere.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        let matches = cmd.get_matches_mut();
        if let Some((sub, _)) = matches.subcommand() {
            let build_flag = cmd.get_arguments().map(|a| a.get_id().as_str()).find(|id| {
                !["quiet", "verbose"].contains(id)
                    && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            });
            if let Some(id) = build_flag {
                cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--{id} builds nodes; it cannot be used with the subcommand '{sub}'").replace('_', "-"),
                )
                .exit();
            }
        }
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `-q` and `-v`, for every command.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct Verbosity {
    /// Print errors only: no progress, no summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print how long each build phase took.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// What a build is made from: the flags `imgbuild` and `imgbuild up` share.
#[derive(Debug, Args, Clone, Default)]
pub struct Inputs {
    /// The cluster file (default: the embedded reference cluster; `imgbuild init` writes it out).
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// The static node-agent binary to embed (default: `node-agent` beside imgbuild).
    #[arg(long, value_name = "FILE", env = "IMGBUILD_AGENT", value_parser = path_or_unset)]
    pub agent: Option<PathBuf>,
    /// The kernel and its modules: a folder (vmlinuz + lib/modules), a kernel
    /// .deb, apt:PACKAGE, or URL#sha256=HEX (default: the running kernel when
    /// its modules are present, else apt:linux-image-cloud-amd64).
    #[arg(long, value_name = "SRC", value_parser = parse_source)]
    pub kernel: Option<SourceSpec>,
    /// The cluster's etcd CA (`ca.key`, `ca.crt`): created there on first
    /// use, reused after (default: $XDG_DATA_HOME/imgbuild/pki/CLUSTER, i.e.
    /// ~/.local/share/imgbuild/pki/CLUSTER). Every node's certificates derive
    /// from it, so the same CA gives the same bytes.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// Where downloads (kernel, packages) and derived files are cached.
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE", value_parser = path_or_unset)]
    pub cache: Option<PathBuf>,
}

/// The build output folder.
#[derive(Debug, Args, Clone)]
pub struct OutDir {
    /// The build output folder (one folder per node inside).
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub out: OutDir,
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
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub out: OutDir,
    /// Prove pod-to-pod traffic across the overlay between every pair of
    /// workers, print the report, stop the cluster, and exit 0 only if all passed.
    #[arg(long)]
    pub check: bool,
    /// How long to wait for readiness (and probes) before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Memory per VM.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub memory: u32,
    /// Print the final report as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub out: OutDir,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build every node of this role.
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    pub role: Option<Role>,
    /// Build only this node.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Build every node of the cluster (as `vagrant/Vagrantfile` wants).
    #[arg(long, conflicts_with_all = ["role", "node"])]
    pub all: bool,
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub out: OutDir,
    /// Write only these outputs (comma-separated), plus `manifest.json`
    /// (default: ignition, image, ipxe, box; and disk with --disk).
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',', conflicts_with = "disk")]
    pub only: Option<Vec<Output>>,
    /// Fetch the agent from this base URL (as `URL/NODE/node-agent`, checked
    /// by sha512) instead of embedding it in the Ignition config.
    #[arg(long, value_name = "URL")]
    pub agent_url: Option<String>,
    /// Also write `NODE.stub.ign`: a small config that merges the full one
    /// from `URL/ignition?mac=MAC` (as `imgbuild serve` answers), sha512-checked.
    #[arg(long, value_name = "URL")]
    pub stub_url: Option<String>,
    /// Put a per-node token (HMAC of the node name under this secret file,
    /// mode 0600) into each node's iPXE script and merge stub, as
    /// `imgbuild serve --token-secret` requires.
    #[arg(long, value_name = "FILE")]
    pub token_secret: Option<PathBuf>,
    /// How the initramfs is compressed.
    #[arg(long, value_name = "ALGORITHM", value_enum, default_value_t)]
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
    /// Print the build summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the cluster file.
    #[arg(long, value_name = "FILE", default_value = "cluster.toml")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub cmd: PolicyCmd,
}

/// How the administrator's commands reach the cluster's etcd.
#[derive(Debug, Args, Clone, Default)]
pub struct EtcdAccess {
    /// The cluster file whose etcd to use (default: the embedded reference cluster).
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// The cluster's CA (`ca.key`, `ca.crt`), from which an admin certificate
    /// is made (default: $XDG_DATA_HOME/imgbuild/pki/CLUSTER).
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// etcd client URLs instead of the cluster file's, comma-separated.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub endpoints: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Store NetworkPolicy and Namespace manifests in the cluster's etcd
    /// (all checked first: one bad object stores nothing).
    Apply {
        /// A manifest file, or a folder of them (YAML with `---`, or JSON).
        #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
        file: PathBuf,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Print the stored NetworkPolicies (or one) as YAML.
    Get {
        /// NAMESPACE/NAME of one policy.
        #[arg(value_name = "NS/NAME")]
        id: Option<String>,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Delete a stored NetworkPolicy.
    Delete {
        /// NAMESPACE/NAME of the policy.
        #[arg(value_name = "NS/NAME")]
        id: String,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Change a pod's labels as policies see them (kubelet never passes a
    /// label change to the runtime): `KEY=VALUE` sets, `KEY-` removes.
    #[command(after_help = "Example:\n  imgbuild policy label prod/web-1 tier=front canary-")]
    Label {
        /// NAMESPACE/NAME of the pod.
        #[arg(value_name = "NS/NAME")]
        id: String,
        /// KEY=VALUE or KEY-.
        #[arg(value_name = "CHANGE", required = true)]
        changes: Vec<String>,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Print, for every ordered pair of distinct pods and port, whether the
    /// policies allow it: `FROM TO PORT/PROTO allow|deny`, sorted.
    #[command(after_help = "Example:\n  imgbuild policy test --pods pods.yaml --policies policies/ --ports 80,53/UDP")]
    Test(PolicyTestArgs),
}

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// The pods: `namespaces: {NAME: {LABELS}}` and `pods: [{namespace, name,
    /// ip, labels, ports: [{name, port, protocol}]}]` (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub pods: PathBuf,
    /// NetworkPolicy and Namespace manifests (networking.k8s.io/v1, YAML with
    /// `---` or JSON): a file, or every .yaml/.yml/.json file of a folder.
    #[arg(long, value_name = "FILE|DIR")]
    pub policies: PathBuf,
    /// The ports to test, as PORT or PORT/PROTO (TCP, UDP, SCTP), comma-
    /// separated (default: each destination pod's own ports).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_port)]
    pub ports: Option<Vec<(u16, imgbuild_policy::Protocol)>>,
}

fn parse_port(s: &str) -> Result<(u16, imgbuild_policy::Protocol), String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let n: u16 = port.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{port:?} is not a port (1 to 65535)"))?;
    Ok((n, proto.to_ascii_uppercase().parse()?))
}

#[derive(Debug, Subcommand)]
pub enum PkiCmd {
    /// New node keys and certificates from the same CA; with --ca, one step
    /// of replacing the CA (stage a new one, make it sign, drop the old),
    /// each followed by rebuilding and rebooting every node.
    Rotate {
        /// Rotate the CA itself, one step per run.
        #[arg(long)]
        ca: bool,
        /// The cluster file (its name names the default CA folder).
        #[arg(long, value_name = "FILE")]
        cluster: Option<PathBuf>,
        /// The cluster's CA folder (default: $XDG_DATA_HOME/imgbuild/pki/CLUSTER).
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EtcdCmd {
    /// The members, and each endpoint's version, leader and database size.
    Status {
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Make an etcd node of the cluster file a member, so that it joins the running cluster.
    Add {
        /// The node's name in the cluster file.
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Remove a member (never the last one).
    Remove {
        /// The node's name.
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Write a snapshot of the database to FILE (mode 0600).
    Snapshot {
        /// Where to write it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Make etcd's users for every node of the cluster file (after adding
    /// nodes) and turn authentication on; etcd members do it when they start.
    Access {
        #[command(flatten)]
        access: EtcdAccess,
    },
    /// Make a member's data folder from a snapshot (needs etcdctl).
    Restore {
        /// The snapshot.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The etcd node of the cluster file the data is for.
        #[arg(long, value_name = "NODE")]
        node: String,
        /// The data folder to make (must not exist).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        access: EtcdAccess,
    },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A path; empty (an environment variable set to nothing) means unset,
/// as the shell's `VAR= cmd` idiom intends. See [`Inputs::agent_path`].
fn path_or_unset(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

impl Inputs {
    pub fn agent_path(&self) -> Option<&std::path::Path> {
        self.agent.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_deref().filter(|p| !p.as_os_str().is_empty())
    }
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

    #[test]
    fn only_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["imgbuild", "--role", "worker", "--only", "ignition,ipxe"]).unwrap();
        assert_eq!(cli.build.only, Some(vec![Output::Ignition, Output::Ipxe]));
        assert!(Cli::try_parse_from(["imgbuild", "--only", "kernel"]).is_err());
        assert!(Cli::try_parse_from(["imgbuild", "--only", "disk", "--disk"]).is_err());
    }
}
