//! Running etcd on etcd nodes of the image: a supervised child with a static
//! initial cluster, restarted with backoff when it exits.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::{EtcdMember, Paths};
use crate::log;

/// etcd's command line for this member.
pub fn args(m: &EtcdMember, paths: &Paths) -> Vec<String> {
    vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", paths.etcd_data_dir.display()),
        format!("--listen-client-urls={},http://127.0.0.1:2379", m.client_url),
        format!("--advertise-client-urls={}", m.client_url),
        format!("--listen-peer-urls={}", m.peer_url),
        format!("--initial-advertise-peer-urls={}", m.peer_url),
        format!("--initial-cluster={}", m.initial_cluster.join(",")),
        format!("--initial-cluster-token={}", m.initial_cluster_token),
        "--initial-cluster-state=new".into(),
        "--enable-v2=false".into(),
    ]
}

/// Starts etcd and keeps it running for ever.
pub async fn supervise(m: EtcdMember, paths: Paths) {
    let mut delay = Duration::from_secs(1);
    loop {
        let log_path = paths.state_dir.join("etcd.log");
        let _ = std::fs::create_dir_all(&paths.state_dir);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map(Stdio::from)
            .unwrap_or(Stdio::null());
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&paths.etcd_bin);
        cmd.args(args(&m, &paths)).stdout(Stdio::null()).stderr(out).kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe. etcd dies with the
        // agent, so a restarted agent never finds a stray member on its ports.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                log::info(&format!("started etcd member {} (pid {})", m.name, child.id().unwrap_or(0)));
                let status = child.wait().await;
                log::warn(&format!("etcd exited ({status:?}); see {}", log_path.display()));
            }
            Err(e) => log::error(&format!("starting {}: {e}", paths.etcd_bin.display())),
        }
        // A member that ran a while gets a quick restart; a crash loop backs off.
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_secs(1);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
