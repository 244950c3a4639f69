//! `imgbuild`: dispatch only.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use imgbuild::agent::AgentBinary;
use imgbuild::build::{self, BuildConfig, VagrantOptions};
use imgbuild::cluster::{self, Cluster};
use imgbuild::cmdline::{BuildArgs, Cli, Cmd, DownArgs, InitArgs, ServeArgs, UpArgs};
use imgbuild::error::InputError;
use imgbuild::formats::vagrant;
use imgbuild::output;
use imgbuild::pki::{self, Pki};
use imgbuild::plan::Selection;
use imgbuild::sources::Cache;
use imgbuild::token::TokenSecret;
use imgbuild::up;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Init(args)) => init(&args),
        Some(Cmd::Up(args)) => up(&args),
        Some(Cmd::Down(args)) => down(&args),
        Some(Cmd::Serve(args)) => serve(&args),
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

/// The cluster CA when its etcd uses TLS: from `--pki`, else the default
/// place for the cluster's name; created on first use.
fn load_pki(cluster: &Cluster, dir: Option<&std::path::Path>) -> Result<Option<Pki>> {
    if !cluster.etcd.tls {
        return Ok(None);
    }
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => pki::default_dir(&cluster.name)?,
    };
    let fresh = !dir.join(pki::CA_KEY).exists() && !dir.join(pki::CA_CERT).exists();
    let loaded = Pki::load_or_create(&dir, &cluster.name)?;
    if fresh {
        eprintln!("imgbuild: created the cluster's etcd CA in {} (keep it: nodes trust only it)", dir.display());
    }
    Ok(Some(loaded))
}

fn build(args: BuildArgs) -> Result<()> {
    if !vagrant::valid_version(&args.box_version) {
        return Err(InputError::new("--box-version", "", "must be numbers separated by dots, such as 1.2.0").into());
    }
    let cluster = load_cluster(args.cluster.as_deref())?;
    let selection = Selection { role: args.role, node: args.node, all: args.all };
    // Everything a user can get wrong is found before anything is written.
    imgbuild::plan::select(&cluster, &selection)?;
    let origin = args.cluster.as_deref().map_or(cluster::DEFAULT_ORIGIN.to_owned(), |p| p.display().to_string());
    cluster.artifacts.check_local(&origin)?;
    if let Some(k) = &args.kernel {
        k.check_local().map_err(|r| InputError::new("--kernel", "", r))?;
    }
    let pki = load_pki(&cluster, args.pki.as_deref())?;
    let cfg = BuildConfig {
        cluster,
        pki,
        selection,
        out: args.out,
        agent: AgentBinary::locate(args.agent.as_deref())?,
        agent_url: args.agent_url,
        stub_url: args.stub_url,
        token_secret: args.token_secret.as_deref().map(TokenSecret::load).transpose()?,
        kernel: args.kernel,
        compression: args.compression,
        debug_boot: args.debug_boot,
        disk: args.disk,
        vagrant: Some(VagrantOptions { base_url: args.box_url, version: args.box_version }),
        cache: Cache::from_env(),
    };
    let built = build::run(&cfg)?;
    print!("{}", build::summary(&built));
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    let secret = args.token_secret.as_deref().map(TokenSecret::load).transpose()?;
    let policy = match secret {
        Some(s) => imgbuild::serve::Access::Tokens(s),
        None if args.insecure_no_token => imgbuild::serve::Access::Open,
        None => imgbuild::serve::Access::PublicOnly,
    };
    imgbuild::serve::serve(&args.listen, &args.out, policy)
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

fn up(args: &UpArgs) -> Result<()> {
    let cluster = load_cluster(args.cluster.as_deref())?;
    let agent = AgentBinary::locate(args.agent.as_deref())?;
    let pki = load_pki(&cluster, args.pki.as_deref())?;
    let cfg = BuildConfig {
        cluster: cluster.clone(),
        pki,
        selection: Selection { all: true, ..Default::default() },
        out: args.out.clone(),
        agent,
        agent_url: None,
        stub_url: None,
        token_secret: None,
        kernel: args.kernel.clone(),
        compression: Default::default(),
        debug_boot: false,
        disk: false,
        vagrant: None,
        cache: Cache::from_env(),
    };
    build::run(&cfg)?;
    let started = std::time::Instant::now();
    up::boot(&cluster, &args.out, args.check, args.memory)?;
    let consoles = up::state_dir(&args.out);
    println!("booting {} VMs; consoles in {}/NODE.console", cluster.nodes.len(), consoles.display());
    let result = wait_for_cluster(&cluster, args);
    let st = up::statuses(&cluster, &args.out);
    print!("{}", up::report(&cluster, &st));
    println!("elapsed since boot: {:.1}s", started.elapsed().as_secs_f64());
    if args.check || result.is_err() {
        let n = up::down(&args.out)?;
        println!("stopped {n} VMs");
    } else {
        println!("stop it with: imgbuild down --out {}", args.out.display());
    }
    result?;
    if args.check {
        println!("check passed: every worker reached every other worker's probe pod with its own address");
    }
    Ok(())
}

fn wait_for_cluster(cluster: &Cluster, args: &UpArgs) -> Result<()> {
    let timeout = std::time::Duration::from_secs(args.timeout);
    let start = std::time::Instant::now();
    let ready = up::wait_until(timeout, || {
        let st = up::statuses(cluster, &args.out);
        if let Some((name, _)) = st.iter().find(|(_, s)| s.panicked) {
            anyhow::bail!(
                "{name}'s kernel panicked; see {}",
                up::state_dir(&args.out).join(format!("{name}.console")).display()
            );
        }
        Ok(st.values().all(|s| s.ready_after.is_some()))
    })?;
    if !ready {
        let st = up::statuses(cluster, &args.out);
        let late: Vec<&str> = st.iter().filter(|(_, s)| s.ready_after.is_none()).map(|(n, _)| n.as_str()).collect();
        anyhow::bail!("timed out after {}s: not ready: {}", args.timeout, late.join(", "));
    }
    if !args.check {
        return Ok(());
    }
    let left = timeout.saturating_sub(start.elapsed());
    let probed =
        up::wait_until(left, || Ok(up::missing_probes(cluster, &up::statuses(cluster, &args.out)).is_empty()))?;
    if !probed {
        let missing = up::missing_probes(cluster, &up::statuses(cluster, &args.out));
        anyhow::bail!("timed out after {}s: probes not passed: {}", args.timeout, missing.join(", "));
    }
    Ok(())
}

fn down(args: &DownArgs) -> Result<()> {
    let n = up::down(&args.out)?;
    println!("stopped {n} VMs");
    Ok(())
}
