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
use crate::process::retry::retry;

/// The probe pod's address in `subnet`: the last usable one.
pub fn probe_ip(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
}

/// Makes a network namespace pinned at `/run/netns/NAME`.
fn make_netns(name: &str) -> Result<PathBuf> {
    let name = name.to_owned();
    // unshare affects only the calling thread: do it on a thread of its own.
    std::thread::spawn(move || -> Result<PathBuf> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let tid = nix::unistd::gettid();
        pin_netns(std::path::Path::new(&format!("/proc/self/task/{tid}/ns/net")), &name)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Pins the namespace at `src` as `/run/netns/NAME` (for a sandbox's, also
/// where operators and `node-agent probe send --netns` find it whatever id
/// the runtime gave it). A previous node process's pin is detached first.
fn pin_netns(src: &std::path::Path, name: &str) -> Result<PathBuf> {
    let dir = PathBuf::from("/run/netns");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    if path.exists() {
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    }
    File::create(&path)?;
    nix::mount::mount(Some(src), &path, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("pinning {} as {}", src.display(), path.display()))?;
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

/// Where each probe pod made through the runtime says its address (CRI
/// picks it), by its node's subnet: `PREFIX` + `10.1.28.0-24`.
pub const PROBES_PREFIX: &str = crate::etcd::keys::PROBES;

/// What the probe sandbox is, for a shell on the node: `sandbox=ID ip=IP`.
pub const PROBE_POD_FILE: &str = "/run/node-agent/probe-pod";

/// The probe pod of a node whose agent runs containerd: a sandbox asked
/// for over CRI, as kubelet asks. A restarted node process first removes
/// its predecessor's.
async fn sandbox_pod(cfg: &NodeConfig, socket: &std::path::Path) -> Result<(PathBuf, Ipv4Addr)> {
    use crate::runtime::cri::{Cri, PodSandboxConfig, PodSandboxMetadata};
    let labels: std::collections::HashMap<String, String> =
        [("imgbuild.io/probe".to_owned(), "true".to_owned())].into();
    let mut cri = Cri::connect(socket).await?;
    cri.remove_labelled(&labels).await.context("removing an earlier probe sandbox")?;
    let name = format!("probe-{}", cfg.node.name);
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: format!("imgbuild-{name}"),
            namespace: "kube-system".into(),
            attempt: 0,
        }),
        hostname: name,
        labels,
    };
    let id = cri.run_sandbox(config).await.context("RunPodSandbox")?;
    let net = cri.sandbox_network(&id).await.context("PodSandboxStatus")?;
    let ip: Ipv4Addr = net.ip.parse().with_context(|| format!("sandbox {id} has no IPv4 address ({:?})", net.ip))?;
    log::info(&format!("probe pod up sandbox={id} ip={ip} uptime={}", log::uptime()));
    // Where a shell on the node finds it: its namespace and its address.
    let ns = pin_netns(&net.netns, "probe")?;
    crate::cni::write_atomic(std::path::Path::new(PROBE_POD_FILE), &format!("sandbox={id} ip={ip}\n"))?;
    Ok((ns, ip))
}

/// The probe pod without a runtime: the CNI plugins run directly, at the
/// subnet's last usable address.
async fn cni_pod(cfg: &NodeConfig, ours: Ipv4Net) -> Result<(PathBuf, Ipv4Addr)> {
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
    Ok((ns, ip))
}

/// A peer's probe pod address: the one its agent put in etcd when that
/// is a pod address of the peer's subnet (not its network, gateway or
/// broadcast address: a value from etcd is trusted no further), else the
/// subnet's last usable address.
async fn probe_target(client: &Client, subnet: Ipv4Net) -> Result<Ipv4Addr> {
    let key = format!("{PROBES_PREFIX}{}", subnet.to_string().replace('/', "-"));
    let (kv, _) = client.get(&key).await?;
    let first = u32::from(subnet.network()) + 2;
    let published = kv
        .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| subnet.contains(ip) && u32::from(*ip) >= first && *ip != subnet.broadcast());
    Ok(published.unwrap_or_else(|| probe_ip(subnet)))
}

/// Creates the probe pod (through containerd's CRI once `runtime` says it
/// is ready, else by CNI directly), serves probes, and probes every peer
/// lease.
pub async fn run(
    cfg: NodeConfig,
    client: Client,
    ours: Ipv4Net,
    runtime: Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<()> {
    let (ns, ip) = match (&cfg.containerd, runtime) {
        (Some(spec), Some(mut ready)) => {
            ready.wait_for(|n| *n > 0).await.context("containerd's supervisor ended")?;
            retry("making the probe pod's sandbox", || sandbox_pod(&cfg, &spec.socket)).await
        }
        _ => cni_pod(&cfg, ours).await?,
    };
    let key = format!("{PROBES_PREFIX}{}", ours.to_string().replace('/', "-"));
    let value = ip.to_string();
    retry("publishing the probe pod's address", || client.put(&key, value.as_bytes(), None)).await;
    let _server = in_netns(ns.clone(), || probe::serve(SocketAddr::from(([0, 0, 0, 0], PORT))));
    let mut reached = std::collections::BTreeSet::new();
    let mut rounds = 0u32;
    loop {
        // etcd gone for a while costs rounds, not the probe.
        let leases = match manager::list_leases(&client).await {
            Ok((leases, _)) => leases,
            Err(e) => {
                log::debug(&format!("probe: listing leases: {e:#}"));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let pending: Vec<_> = leases.into_iter().filter(|l| l.subnet != ours && !reached.contains(&l.subnet)).collect();
        if pending.is_empty() {
            // Everyone answered: look for new peers now and then.
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        let mut targets = Vec::new();
        for l in &pending {
            targets.push(probe_target(&client, l.subnet).await.unwrap_or_else(|_| probe_ip(l.subnet)));
        }
        // Every peer at once: a peer whose pod is not up yet costs its
        // timeouts, not everyone's.
        let sent: Vec<_> = pending
            .into_iter()
            .zip(targets)
            .map(|(l, pod)| {
                let target = SocketAddr::from((pod, PORT));
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
