//! The boot-time connectivity probe: a probe pod made through the real CNI
//! plugins at the subnet's last usable address, answering probes, and
//! probing the probe pod of every other lease until each has answered.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use nix::sched::{setns, unshare, CloneFlags};

use crate::cni::exec::{Runner, Sandbox};
use crate::cni::CONFLIST_NAME;
use crate::config::NodeConfig;
use crate::etcd::Client;
use crate::flannel::manager;
use crate::log;
use crate::probe::{self, PORT};

/// The probe pod's address in `subnet`: the last usable one.
pub fn probe_ip(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
}

/// Makes a network namespace pinned at `/run/netns/NAME`.
fn make_netns(name: &str) -> Result<PathBuf> {
    let dir = PathBuf::from("/run/netns");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    if path.exists() {
        // A previous node process's namespace: detach it, start afresh.
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    }
    File::create(&path)?;
    let target = path.clone();
    // unshare affects only the calling thread: do it on a thread of its own.
    std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let tid = nix::unistd::gettid();
        nix::mount::mount(
            Some(format!("/proc/self/task/{tid}/ns/net").as_str()),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("pinning the probe namespace")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
    Ok(path)
}

/// Runs `f` on a new thread inside the namespace at `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    std::thread::spawn(move || {
        let file = File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
}

/// Creates the probe pod, serves probes, and probes every peer lease.
pub async fn run(cfg: NodeConfig, client: Client, ours: Ipv4Net) -> Result<()> {
    let ns = make_netns("probe")?;
    let runner = Runner::load(&cfg.paths.cni_conf_dir.join(CONFLIST_NAME), &cfg.paths.cni_bin_dir)?;
    let ip = probe_ip(ours);
    let sb = Sandbox {
        container_id: "probe".into(),
        netns: ns.clone(),
        namespace: "kube-system".into(),
        name: format!("probe-{}", cfg.node.name),
        extra_args: vec![("IP".into(), ip.to_string())],
    };
    tokio::task::spawn_blocking(move || {
        // A node process restarted by PID 1 finds its predecessor's pod:
        // delete it (CNI DEL is idempotent) so the address is free again.
        let _ = runner.del(&sb);
        runner.add(&sb)
    })
    .await??;
    log::info(&format!("probe pod up at {ip} uptime={}", log::uptime()));
    let _server = in_netns(ns.clone(), || probe::serve(SocketAddr::from(([0, 0, 0, 0], PORT))));
    let mut reached = std::collections::BTreeSet::new();
    let mut rounds = 0u32;
    loop {
        let (leases, _) = manager::list_leases(&client).await?;
        // Every peer at once: a peer whose pod is not up yet costs its
        // timeouts, not everyone's.
        let sent: Vec<_> = leases
            .into_iter()
            .filter(|l| l.subnet != ours && !reached.contains(&l.subnet))
            .map(|l| {
                let target = SocketAddr::from((probe_ip(l.subnet), PORT));
                (l, target, in_netns(ns.clone(), move || probe::send(target, 2)))
            })
            .collect();
        for (l, target, thread) in sent {
            let res = thread.join().map_err(|_| anyhow::anyhow!("probe thread panicked"))?;
            match res.and_then(|r| r) {
                Ok(o) if o.seen_as == o.ours => {
                    log::info(&format!(
                        "probe ok peer={} pod={} seen-as={}",
                        l.attrs.public_ip,
                        target.ip(),
                        o.seen_as
                    ));
                    reached.insert(l.subnet);
                }
                Ok(o) => log::warn(&format!(
                    "probe NAT peer={} pod={} seen-as={} ours={}",
                    l.attrs.public_ip,
                    target.ip(),
                    o.seen_as,
                    o.ours
                )),
                Err(e) if rounds % 20 == 19 => {
                    log::warn(&format!("probe waiting peer={} pod={}: {e:#}", l.attrs.public_ip, target.ip()))
                }
                Err(_) => {}
            }
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
