//! kubelet's container runtime on the image's nodes: containerd, its CRI
//! plugin running our conflist, started once the pod network is ready and
//! kept running like etcd. Pods keep their network while it restarts: their
//! namespaces and shims outlive it.

pub mod cri;
pub mod oci;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use node_config::containerd::{ConfigFile, Host};
use node_config::{Containerd, Paths};

use crate::log;

/// containerd's namespace for kubelet's images and containers.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Starts containerd and keeps it running for ever; `ready` counts the
/// starts after which its socket answered and the pause image was in.
pub async fn supervise(spec: Containerd, paths: Paths, ready: tokio::sync::watch::Sender<u64>) {
    let agent = match std::fs::read("/proc/self/exe") {
        Ok(bytes) => bytes,
        Err(e) => {
            log::error(&format!("containerd: reading our own binary for the pause image: {e}; not starting it"));
            return std::future::pending().await;
        }
    };
    // Built and hashed once: every start checks and imports these blobs.
    let pause = match oci::pause_image(&agent).layout() {
        Ok(layout) => layout,
        Err(e) => {
            log::error(&format!("containerd: building the pause image: {e:#}; not starting it"));
            return std::future::pending().await;
        }
    };
    drop(agent);
    let cfg = ConfigFile {
        spec: &spec,
        cni_conf_dir: &paths.cni_conf_dir,
        cni_bin_dir: &paths.cni_bin_dir,
        host: Host::Image { sandbox_image: &pause.name, restrict_oom_score_adj: !may_lower_oom_scores() },
    };
    if let Err(e) = crate::cni::write_atomic(&spec.config, &cfg.render()) {
        log::error(&format!("containerd: {e:#}; not starting it"));
        return std::future::pending().await;
    }
    let argv = vec![spec.bin.display().to_string(), "--config".into(), spec.config.display().to_string()];
    let env = vec![("PATH".to_owned(), search_path(&spec))];
    let log_path = paths.state_dir.join("containerd.log");
    let (spec, pause, ready_tx) = (&spec, &pause, &ready);
    let repair = std::sync::atomic::AtomicBool::new(false);
    let repair = &repair;
    // containerd is down before each start: the one moment its blobs may be touched.
    let before = || repair.store(drop_corrupt_blobs(&spec.root, &pause.blobs), std::sync::atomic::Ordering::Relaxed);
    crate::process::supervise::forever_with("containerd", &argv, &env, &log_path, before, move || {
        let must_repair = repair.load(std::sync::atomic::Ordering::Relaxed);
        async move {
            match bring_up(spec, pause, must_repair).await {
                Ok(()) => {
                    ready_tx.send_modify(|n| *n += 1);
                    log::info(&format!(
                        "containerd ready socket={} sandbox_image={} uptime={}",
                        spec.socket.display(),
                        pause.name,
                        log::uptime()
                    ))
                }
                Err(e) => log::error(&format!("containerd: {e:#}")),
            }
            std::future::pending().await
        }
    })
    .await
}

/// Whether this process holds CAP_SYS_RESOURCE, which lowering an OOM
/// score below its parent's needs.
fn may_lower_oom_scores() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim);
    effective.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// containerd finds its shim on `PATH`: the folders of our binaries first.
fn search_path(spec: &Containerd) -> String {
    let mut dirs: Vec<String> = [&spec.bin, &spec.runc]
        .iter()
        .filter_map(|p| p.parent())
        // A bare name (`runc`) has an empty parent: never the current folder.
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.display().to_string())
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(String::from))
        .collect();
    dirs.dedup();
    dirs.join(":")
}

/// Content store files of `blobs` whose bytes no longer match their digest
/// are removed (containerd is not running), so the import writes them
/// again. True when one was.
fn drop_corrupt_blobs(root: &Path, blobs: &[oci::Blob]) -> bool {
    let dir = root.join("io.containerd.content.v1.content/blobs/sha256");
    let mut dropped = false;
    for b in blobs {
        let file = dir.join(b.hex_digest());
        let Some(whole) = blob_is_whole(&file, b) else { continue };
        if !whole {
            log::warn(&format!("pause image blob {} is corrupt; importing the image again", file.display()));
            let _ = std::fs::remove_file(&file);
            dropped = true;
        }
    }
    dropped
}

/// Whether the store's file for `blob` holds its bytes; None when there is
/// none. Read as containerd left it: a regular file, not through a link,
/// never blocking (a FIFO), at most one byte more than the blob.
fn blob_is_whole(file: &Path, blob: &oci::Blob) -> Option<bool> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(file);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => return Some(false),
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Some(false);
    }
    let mut bytes = Vec::new();
    if f.take(blob.bytes.len() as u64 + 1).read_to_end(&mut bytes).is_err() {
        return Some(false);
    }
    Some(bytes == blob.bytes)
}

/// Waits for containerd's socket, then imports the pause image (first
/// forgetting it when a blob was corrupt).
async fn bring_up(spec: &Containerd, pause: &oci::Layout, repair: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while tokio::net::UnixStream::connect(&spec.socket).await.is_err() {
        if Instant::now() > deadline {
            bail!("no socket at {} after 120 s", spec.socket.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if repair {
        let blobs = &pause.blobs;
        // The CRI plugin also names each image by its config's digest, and
        // keeps what it read for as long as one name remains: drop both.
        let id = format!("sha256:{}", blobs[1].hex_digest());
        let _ = ctr(spec, &["images", "rm", &pause.name, &id]).await;
        let digests: Vec<String> = blobs.iter().map(|b| format!("sha256:{}", b.hex_digest())).collect();
        let mut args = vec!["content", "rm"];
        args.extend(digests.iter().map(String::as_str));
        let _ = ctr(spec, &args).await;
    }
    // A file of our own (created new, never through a name someone left
    // there), removed when dropped.
    let mut tar = tempfile::Builder::new()
        .prefix(".imgbuild-pause-")
        .suffix(".tar")
        .tempfile_in(&spec.state)
        .with_context(|| format!("a temporary file in {}", spec.state.display()))?;
    std::io::Write::write_all(&mut tar, &pause.tar()?).context("writing the pause image")?;
    let path = tar.path().display().to_string();
    ctr(spec, &["images", "import", &path]).await.context("importing the pause image")
}

/// Runs ctr against our containerd, in kubelet's namespace.
async fn ctr(spec: &Containerd, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(&spec.ctr)
        .arg("--address")
        .arg(&spec.socket)
        .args(["--namespace", CRI_NAMESPACE])
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", spec.ctr.display()))?;
    if !out.status.success() {
        bail!("ctr {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's blob is read as containerd wrote it, or counted corrupt:
    /// never through a link, never blocking on a FIFO, never more than the blob.
    #[test]
    fn blobs_are_checked_without_following_or_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let image = oci::pause_image(b"an agent");
        let [_, config, _] = image.blobs().unwrap();
        let at = |name: &str| tmp.path().join(name);
        assert_eq!(blob_is_whole(&at("missing"), &config), None);
        std::fs::write(at("whole"), &config.bytes).unwrap();
        assert_eq!(blob_is_whole(&at("whole"), &config), Some(true));
        std::fs::write(at("corrupt"), b"{}").unwrap();
        assert_eq!(blob_is_whole(&at("corrupt"), &config), Some(false));
        let mut longer = config.bytes.clone();
        longer.extend_from_slice(b"more");
        std::fs::write(at("longer"), longer).unwrap();
        assert_eq!(blob_is_whole(&at("longer"), &config), Some(false));
        std::os::unix::fs::symlink(at("whole"), at("link")).unwrap();
        assert_eq!(blob_is_whole(&at("link"), &config), Some(false));
        std::os::unix::fs::symlink("/dev/zero", at("zero")).unwrap();
        assert_eq!(blob_is_whole(&at("zero"), &config), Some(false));
        nix::unistd::mkfifo(&at("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(blob_is_whole(&at("fifo"), &config), Some(false));
    }

    #[test]
    fn a_bare_runc_adds_no_empty_path_entry() {
        let spec = Containerd { runc: "runc".into(), ..Default::default() };
        let path = search_path(&spec);
        assert!(!path.split(':').any(str::is_empty), "{path}");
        assert!(path.starts_with("/usr/bin:"), "{path}");
    }
}
