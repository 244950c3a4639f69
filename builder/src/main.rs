//! `imgbuild`: dispatch only.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use imgbuild::agent::AgentBinary;
use imgbuild::build::{self, BuildConfig};
use imgbuild::cluster::{self, Cluster};
use imgbuild::cmdline::{BuildArgs, Cli, Cmd, InitArgs};
use imgbuild::error::InputError;
use imgbuild::output;
use imgbuild::plan::Selection;
use imgbuild::sources::Cache;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Init(args)) => init(&args),
        None => build(cli.build),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgbuild: error: {e:#}");
            // Input the user can fix is status 2; everything else is 1.
            if e.chain().any(|c| c.is::<InputError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn load_cluster(path: Option<&std::path::Path>) -> Result<Cluster, InputError> {
    match path {
        Some(p) => Cluster::load(p),
        None => Ok(Cluster::embedded_default()),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let cluster = load_cluster(args.cluster.as_deref())?;
    let cfg = BuildConfig {
        cluster,
        selection: Selection { role: args.role, node: args.node },
        out: args.out,
        agent: AgentBinary::locate(args.agent.as_deref())?,
        agent_url: args.agent_url,
        kernel: args.kernel,
        compression: args.compression,
        debug_boot: args.debug_boot,
        cache: Cache::from_env(),
    };
    let built = build::run(&cfg)?;
    print!("{}", build::summary(&built));
    Ok(())
}

fn init(args: &InitArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(
            InputError::new(args.out.display().to_string(), "", "already exists (use --force to replace it)").into()
        );
    }
    let file = cluster::parse_file(cluster::DEFAULT_TOML, cluster::DEFAULT_ORIGIN)?;
    let text = Cluster::embedded_default().to_toml(&file);
    output::write_file_atomic(&args.out, text.as_bytes()).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
