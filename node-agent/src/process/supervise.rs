//! Keeping a child program running: started with its output in a log file,
//! killed when the agent dies, restarted with backoff when it exits.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::log;

/// Runs `argv` for ever; `name` labels logs, `log_path` gets its stderr/stdout.
pub async fn forever(name: &str, argv: &[String], log_path: &Path) {
    forever_with(name, argv, &[], log_path, || (), || async {}).await
}

/// [`forever`] with `env` added to the child's environment, `before` run
/// before each start (the child is not running), and `started` run after
/// each start while the child runs (it may still be coming up): what a
/// program needs before it is of use, such as images imported.
pub async fn forever_with<B, F, Fut>(
    name: &str,
    argv: &[String],
    env: &[(String, String)],
    log_path: &Path,
    mut before: B,
    mut started: F,
) where
    B: FnMut(),
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = super::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let begun = Instant::now();
        before();
        match spawn(argv, env, log_path) {
            Ok(mut child) => {
                log::info(&format!("started {name} (pid {})", child.id().unwrap_or(0)));
                let status = tokio::select! {
                    status = child.wait() => status,
                    () = started() => child.wait().await,
                };
                log::warn(&format!("{name} exited ({status:?}); see {}", log_path.display()));
            }
            Err(e) => log::error(&format!("starting {name} ({}): {e}", argv[0])),
        }
        // A program that ran a while gets a quick restart; a crash loop backs off.
        if begun.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn spawn(argv: &[String], env: &[(String, String)], log_path: &Path) -> std::io::Result<tokio::process::Child> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env.iter().cloned()).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    cmd.kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe. The child dies with the
    // agent, so a restarted agent never finds a stray one on its ports.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}
