//! What each `imgbuild` command does, from its parsed flags. `main.rs`
//! only dispatches here and turns the result into an exit status.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::build::{self, BuildConfig, Output};
use crate::cluster::{self, Cluster};
use crate::cmdline::{
    BuildArgs, Cli, CompletionsArgs, DownArgs, EtcdCmd, InitArgs, PolicyArgs, PolicyCmd, ServeArgs, Shell, UpArgs,
    Verbosity,
};
use crate::error::InputError;
use crate::formats::vagrant;
use crate::plan::Selection;
use crate::token::TokenSecret;
use crate::{output, serve, ui, up};

/// Input the user can fix is status 2; everything else is 1.
pub fn exit_status(result: Result<()>) -> ExitCode {
    let Err(e) = result else { return ExitCode::SUCCESS };
    eprintln!("imgbuild: error: {}", escaped(&format!("{e:#}")));
    if e.chain().any(|c| c.is::<InputError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// A closed stdout (`imgbuild ... | head`) ends the command quietly, as
/// it does any Unix tool, instead of a panic in `println!`. Not for `serve`,
/// whose sockets never raise SIGPIPE anyway (std sends with MSG_NOSIGNAL).
pub fn end_quietly_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restoring the default disposition, before any thread starts.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Control bytes in an error (from a file name, a package's entry) are
/// shown escaped, so a message is one line and cannot rewrite the terminal.
fn escaped(msg: &str) -> String {
    // Bidi controls too: they reorder what a terminal shows.
    let hidden = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    msg.chars().map(|c| if hidden(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

pub fn set_verbosity(v: Verbosity) {
    ui::set_level(match (v.quiet, v.verbose) {
        (true, _) => ui::Level::Quiet,
        (_, true) => ui::Level::Verbose,
        _ => ui::Level::Normal,
    });
}

/// A base URL that paths are appended to: http(s) with a host, and no
/// query or fragment (what follows would land in them), every `%` an
/// escape as Ignition parses it.
fn check_base_url(url: &str) -> std::result::Result<(), String> {
    node_config::rules::check_http_url(url)?;
    let bad_escape = url
        .match_indices('%')
        .any(|(i, _)| url.as_bytes().get(i + 1..i + 3).is_none_or(|h| !h.iter().all(u8::is_ascii_hexdigit)));
    if url.contains(['?', '#']) || bad_escape {
        return Err(format!("{url:?} must be a base URL: no query, no fragment, '%' only as an escape"));
    }
    Ok(())
}

pub fn build(args: BuildArgs) -> Result<()> {
    if !vagrant::valid_version(&args.box_version) {
        return Err(InputError::new("--box-version", "", "must be numbers separated by dots, such as 1.2.0").into());
    }
    // Before anything is made (the cluster CA among them).
    for (flag, url) in [("--agent-url", &args.agent_url), ("--stub-url", &args.stub_url)] {
        if let Some(url) = url {
            check_base_url(url).map_err(|why| InputError::new(flag, "", why))?;
        }
    }
    let selection = Selection { role: args.role, node: args.node, all: args.all };
    let mut cfg = BuildConfig::new(&args.inputs, args.out.out, selection)?;
    cfg.agent_url = args.agent_url;
    cfg.stub_url = args.stub_url;
    cfg.token_secret = args.token_secret.as_deref().map(TokenSecret::load).transpose()?;
    cfg.compression = args.compression;
    cfg.debug_boot = args.debug_boot;
    cfg.vagrant = build::VagrantOptions { base_url: args.box_url, version: args.box_version };
    match args.only {
        Some(only) => cfg.outputs = only.into_iter().collect(),
        None if args.disk => {
            cfg.outputs.insert(Output::Disk);
        }
        None => {}
    }
    let built = build::run(&cfg)?;
    if let Some(note) = build::user_data_note(&built) {
        ui::note(&note);
    }
    if args.json {
        print!("{}", build::summary_json(&built));
    } else if !ui::quiet() {
        print!("{}", build::summary(&built));
    }
    Ok(())
}

pub fn pki(cmd: &crate::cmdline::PkiCmd) -> Result<()> {
    let crate::cmdline::PkiCmd::Rotate { ca, cluster, pki } = cmd;
    let loaded = build::load_cluster(cluster.as_deref())?;
    let dir = match pki {
        Some(d) => d.clone(),
        None => crate::pki::default_dir(&loaded.name)?,
    };
    let said = crate::pki::rotate(&dir, &loaded.name, *ca)?;
    println!("{said}");
    Ok(())
}

pub fn up(args: UpArgs) -> Result<()> {
    let all = Selection { all: true, ..Default::default() };
    let mut cfg = BuildConfig::new(&args.inputs, args.out.out.clone(), all)?;
    // Its VMs share one private segment with no DHCP server: static addresses only.
    if let Some((i, n)) = cfg.cluster.nodes.iter().enumerate().find(|(_, n)| n.ip.is_none()) {
        return Err(crate::error::InputError::new(
            &cfg.origin,
            format!("node[{i}].ip"),
            format!("imgbuild up gives its VMs static addresses on a private network; {} uses DHCP", n.name),
        )
        .into());
    }
    // `up` boots the image; the configs and scripts are written too, for looking at.
    cfg.outputs = [Output::Ignition, Output::Image, Output::Ipxe].into();
    build::run(&cfg)?;
    let opts = up::UpOptions {
        check: args.check,
        timeout: std::time::Duration::from_secs(args.timeout),
        memory_mb: args.memory,
        json: args.json,
    };
    up::run(&cfg.cluster, &args.out.out, opts)
}

pub fn down(args: &DownArgs) -> Result<()> {
    let n = up::down(&args.out.out)?;
    println!("stopped {n} VMs");
    Ok(())
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    let secret = args.token_secret.as_deref().map(TokenSecret::load).transpose()?;
    let policy = match secret {
        Some(s) => serve::Access::Tokens(s),
        None if args.insecure_no_token => serve::Access::Open,
        None => serve::Access::PublicOnly,
    };
    serve::serve(&args.listen, &args.out.out, policy)
}

pub fn init(args: &InitArgs) -> Result<()> {
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

/// `imgbuild policy ...`.
pub fn policy(args: &PolicyArgs) -> Result<()> {
    match &args.cmd {
        PolicyCmd::Test(t) => crate::policy::test(&t.pods, &t.policies, t.ports.as_deref(), &mut std::io::stdout()),
        PolicyCmd::Apply { file, access } => crate::policy::apply(access, file, &mut std::io::stdout()),
        PolicyCmd::Get { id, access } => crate::policy::get(access, id.as_deref(), &mut std::io::stdout()),
        PolicyCmd::Delete { id, access } => crate::policy::delete(access, id, &mut std::io::stdout()),
        PolicyCmd::Label { id, changes, access } => crate::policy::label(access, id, changes, &mut std::io::stdout()),
    }
}

/// `imgbuild etcd ...`.
pub fn etcd(cmd: &EtcdCmd) -> Result<()> {
    use crate::etcd_admin as e;
    let out = &mut std::io::stdout();
    match cmd {
        EtcdCmd::Status { access } => e::status(access, out),
        EtcdCmd::Add { node, access } => e::add(access, node, out),
        EtcdCmd::Remove { node, access } => e::remove(access, node, out),
        EtcdCmd::Snapshot { file, access } => e::snapshot(access, file, out),
        EtcdCmd::Access { access } => e::access(access, out),
        EtcdCmd::Restore { file, node, data_dir, access } => e::restore(access, file, node, data_dir, out),
    }
}

/// `imgbuild completions SHELL`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "imgbuild", &mut script);
    std::io::stdout().write_all(&script).context("writing the completion script")
}

/// `imgbuild man`: the man page (roff) on stdout, from the same definitions.
pub fn man() -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page).context("rendering the man page")?;
    std::io::stdout().write_all(&page).context("writing the man page")
}
