//! Kernel sources of every kind give the same image: a folder, a `.deb`, a
//! pinned URL (served on loopback); a wrong pin is refused and not cached.

mod common;

use std::path::{Path, PathBuf};

use common::{imgbuild_with_agent, run_ok, serve, test_cache};
use imgbuild::sources::{kernel, sha256_file, Cache, SourceSpec};

fn debian_kernel_deb() -> PathBuf {
    let cache = Cache::new(test_cache());
    let k = kernel::resolve(&cache, &SourceSpec::Apt("linux-image-cloud-amd64".into())).unwrap();
    // The blob whose unpacked tree holds this kernel.
    let tree = k.vmlinuz.parent().unwrap().parent().unwrap();
    cache.root.join("blobs").join(tree.file_name().unwrap())
}

fn initrd_with(kernel: &str, out: &Path, cache: Option<&Path>) -> std::process::Output {
    let mut cmd = imgbuild_with_agent();
    cmd.args(["--node", "worker-1", "--kernel", kernel, "--out"]).arg(out);
    if let Some(c) = cache {
        cmd.env("IMGBUILD_CACHE", c);
    }
    cmd.output().unwrap()
}

#[test]
fn deb_folder_and_url_kernels_agree() {
    let deb = debian_kernel_deb();
    assert!(deb.is_file(), "{}", deb.display());
    let tmp = tempfile::tempdir().unwrap();

    let from_deb = tmp.path().join("deb");
    let k_deb = tmp.path().join("kernel.deb");
    std::fs::copy(&deb, &k_deb).unwrap();
    run_ok(imgbuild_with_agent().args(["--node", "worker-1", "--kernel"]).arg(&k_deb).arg("--out").arg(&from_deb));

    // A folder: vmlinuz + lib/modules/VERSION.
    let k = kernel::resolve(&Cache::new(test_cache()), &SourceSpec::Deb(k_deb.clone())).unwrap();
    let folder = tmp.path().join("kernel-folder");
    std::fs::create_dir_all(folder.join("lib/modules")).unwrap();
    std::fs::copy(&k.vmlinuz, folder.join("vmlinuz")).unwrap();
    std::os::unix::fs::symlink(&k.modules, folder.join("lib/modules").join(&k.version)).unwrap();
    let from_folder = tmp.path().join("folder");
    let out = initrd_with(folder.to_str().unwrap(), &from_folder, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A pinned URL, downloaded into a fresh cache.
    let url = format!("{}/kernel.deb", serve(std::fs::read(&deb).unwrap()));
    let sha = hex::encode(sha256_file(&deb).unwrap());
    let fresh = tmp.path().join("cache");
    let from_url = tmp.path().join("url");
    let out = initrd_with(&format!("{url}#sha256={sha}"), &from_url, Some(&fresh));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(fresh.join("blobs").join(&sha).is_file(), "download not cached by digest");

    for f in ["vmlinuz", "initrd.img"] {
        let a = std::fs::read(from_deb.join("worker-1").join(f)).unwrap();
        assert!(a == std::fs::read(from_folder.join("worker-1").join(f)).unwrap(), "{f}: folder differs from .deb");
        assert!(a == std::fs::read(from_url.join("worker-1").join(f)).unwrap(), "{f}: URL differs from .deb");
    }

    // A wrong pin: refused, nothing cached, nothing written.
    let wrong = "0".repeat(64);
    let fresh = tmp.path().join("cache2");
    let bad_out = tmp.path().join("bad");
    let out = initrd_with(&format!("{url}#sha256={wrong}"), &bad_out, Some(&fresh));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("sha256 is {sha} but the cluster file pins {wrong}; refusing it")), "{err}");
    assert!(!fresh.join("blobs").join(&wrong).exists() && !fresh.join("blobs").join(&sha).exists());
    assert!(!bad_out.join("worker-1").exists());
}

/// Every entry under `root`: path, kind, mode, and content digest or link target.
fn listing(root: &Path) -> Vec<String> {
    listing_and_modes(root).0
}

/// As `listing`, with each entry's real and plain mode.
fn listing_and_modes(root: &Path) -> (Vec<String>, Vec<(String, u32, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut modes = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            // What imgbuild promises of a tree: 0755 folders and
            // executables, 0644 other files (no setuid, nothing world-writable).
            let mode = match meta.permissions().mode() {
                _ if meta.file_type().is_symlink() => 0o777,
                _ if meta.is_dir() => 0o755,
                m if m & 0o111 != 0 => 0o755,
                _ => 0o644,
            };
            let real = if meta.file_type().is_symlink() { 0o777 } else { meta.permissions().mode() & 0o7777 };
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file {}", hex::encode(sha256_file(&path).unwrap()))
            };
            out.push(format!("{rel} {mode:o} {what}"));
            modes.push((rel, real, mode));
        }
    }
    out.sort();
    (out, modes)
}

/// The same files, contents and links as dpkg-deb -x, with plain modes.
#[test]
fn debs_unpack_in_process_exactly_as_dpkg_deb_does() {
    common::require_tool("dpkg-deb");
    let deb = debian_kernel_deb();
    let tmp = tempfile::tempdir().unwrap();
    let ours = imgbuild::sources::deb::unpack(&Cache::new(tmp.path().join("cache")), &deb).unwrap();
    let theirs = tmp.path().join("dpkg");
    run_ok(std::process::Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&theirs));
    let ((a, modes), b) = (listing_and_modes(&ours), listing(&theirs));
    for (path, real, plain) in modes {
        assert_eq!(real, plain, "{path}: mode {real:o} in the tree, not {plain:o}");
    }
    assert!(a.len() > 1000, "a kernel package has thousands of files: {}", a.len());
    assert!(a == b, "in-process unpack differs from dpkg-deb -x: {:?}", a.iter().zip(&b).find(|(x, y)| x != y));
    for field in ["Package", "Version", "Depends", "Description", "Nonexistent"] {
        let dpkg = run_ok(std::process::Command::new("dpkg-deb").arg("-f").arg(&deb).arg(field));
        let want = String::from_utf8(dpkg.stdout).unwrap();
        let want = want.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        assert_eq!(imgbuild::sources::deb::field(&deb, field).unwrap(), want.trim(), "{field}");
    }
}
