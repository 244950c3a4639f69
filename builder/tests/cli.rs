//! The `imgbuild` command line as a user meets it: exit codes, messages,
//! and no output left behind on bad input.

mod common;

use common::{imgbuild, imgbuild_with_agent, run_ok, TEST_KERNEL};

fn stderr_of(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn bad_cluster_exits_2_with_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cluster.toml");
    std::fs::write(&bad, imgbuild::cluster::DEFAULT_TOML.replace("ip = \"172.17.8.104\"", "ip = \"172.17.9.104\""))
        .unwrap();
    let out = dir.path().join("out");
    let (code, err) = stderr_of(imgbuild().args(["--role", "worker", "--cluster"]).arg(&bad).arg("--out").arg(&out));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        format!(
            "imgbuild: error: {}: node[3].ip: 172.17.9.104 is outside the node network 172.17.8.0/24\n",
            bad.display()
        )
    );
    assert!(!out.exists(), "bad input left output behind");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = stderr_of(imgbuild().args(["--role", "controller"]));
    assert_eq!(code, 2);
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = stderr_of(imgbuild().args(["--node", "nope", "--out"]).arg(dir.path().join("o")));
    assert_eq!(code, 2);
    assert!(err.contains("no node named \"nope\""), "{err}");
    let (code, err) = stderr_of(imgbuild().args(["--cluster", "/nonexistent/cluster.toml", "--role", "worker"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/cluster.toml: cannot read"), "{err}");
}

#[test]
fn init_writes_the_default_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    run_ok(imgbuild().arg("init").arg("--out").arg(&file));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("mac = \"52:54:00:").count(), 4, "{text}");
    let (code, err) = stderr_of(imgbuild().arg("init").arg("--out").arg(&file));
    assert_eq!(code, 2, "{err}");
    // The written file builds the same worker as the embedded default.
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let worker = ["--node", "worker-1", "--kernel", TEST_KERNEL];
    run_ok(imgbuild_with_agent().args(worker).arg("--out").arg(&a));
    run_ok(imgbuild_with_agent().args(worker).arg("--cluster").arg(&file).arg("--out").arg(&b));
    assert_eq!(
        std::fs::read(a.join("worker-1/worker-1.ign")).unwrap(),
        std::fs::read(b.join("worker-1/worker-1.ign")).unwrap()
    );
}

#[test]
fn build_is_reproducible_and_manifest_matches() {
    let dir = tempfile::tempdir().unwrap();
    for run in ["a", "b"] {
        // The Ignition config and the manifest are what this checks; the
        // images' bytes are image.rs's.
        let master = ["--role", "master", "--only", "ignition"];
        run_ok(imgbuild_with_agent().args(master).arg("--out").arg(dir.path().join(run)));
    }
    for f in ["master-1.ign", "manifest.json"] {
        let a = std::fs::read(dir.path().join("a/master-1").join(f)).unwrap();
        let b = std::fs::read(dir.path().join("b/master-1").join(f)).unwrap();
        assert!(a == b, "{f} differs between identical builds");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("a/master-1/manifest.json")).unwrap()).unwrap();
    let ign = std::fs::read(dir.path().join("a/master-1/master-1.ign")).unwrap();
    let entry = m["artifacts"].as_array().unwrap().iter().find(|e| e["file"] == "master-1.ign").unwrap();
    assert_eq!(entry["size"], ign.len() as u64);
    use sha2::Digest;
    assert_eq!(entry["sha256"], hex::encode(sha2::Sha256::digest(&ign)));
}

#[test]
fn refuses_a_dynamic_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) =
        stderr_of(imgbuild().args(["--role", "worker", "--agent", "/bin/sh", "--out"]).arg(dir.path().join("o")));
    assert_eq!(code, 1);
    assert!(err.contains("is not static"), "{err}");
}

#[test]
fn the_cluster_ca_is_created_once_kept_private_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let worker = ["--node", "worker-1", "--only", "ignition", "--pki"];
    let out = run_ok(imgbuild_with_agent().args(worker).arg(&pki).arg("--out").arg(dir.path().join("a")));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("created the cluster's etcd CA in {}", pki.display())), "{said}");
    let key = pki.join("ca.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // The node's private key travels in its config: only its owner reads them.
    let ign = dir.path().join("a/worker-1/worker-1.ign");
    assert_eq!(std::fs::metadata(&ign).unwrap().permissions().mode() & 0o777, 0o600);

    // The same CA again: same bytes, and nothing new said.
    let out = run_ok(imgbuild_with_agent().args(worker).arg(&pki).arg("--out").arg(dir.path().join("b")));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created"));
    assert!(std::fs::read(&ign).unwrap() == std::fs::read(dir.path().join("b/worker-1/worker-1.ign")).unwrap());

    // A CA key others may read is refused before anything is written.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = dir.path().join("c");
    let (code, err) = stderr_of(imgbuild_with_agent().args(worker).arg(&pki).arg("--out").arg(&c));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        format!("imgbuild: error: {}: the CA key is readable by others (mode 644); chmod 600 it\n", key.display())
    );
    assert!(!c.exists(), "bad input left output behind");
}

#[test]
fn a_plain_http_cluster_makes_no_ca() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, imgbuild::cluster::DEFAULT_TOML.replace("tls = true", "tls = false")).unwrap();
    let data_home = dir.path().join("data");
    let mut cmd = imgbuild_with_agent();
    cmd.args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--cluster"]).arg(&file);
    run_ok(cmd.env("XDG_DATA_HOME", &data_home).arg("--out").arg(dir.path().join("o")));
    assert!(!data_home.exists(), "a cluster without TLS needs no CA");
    // The agent's config, as Ignition would install it: plain HTTP, no keys.
    struct Offline;
    impl imgbuild_ignition::apply::Fetch for Offline {
        fn fetch(&self, url: &str) -> Result<Box<dyn std::io::Read + '_>, String> {
            Err(format!("offline: {url}"))
        }
    }
    let ign = std::fs::read(dir.path().join("o/worker-1/worker-1.ign")).unwrap();
    let root = dir.path().join("root");
    imgbuild_ignition::apply::apply(&ign, &root, &Offline).unwrap();
    let config = std::fs::read_to_string(root.join("etc/node-agent/config.json")).unwrap();
    assert!(config.contains("\"http://172.17.8.101:2379\"") && !config.contains("PRIVATE KEY"), "{config}");
}

/// Input a user can get wrong is found before anything is written: no CA,
/// no output folder, no download.
#[test]
fn bad_selections_sources_and_outputs_exit_2_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let cluster = dir.path().join("c.toml");
    let missing_etcd =
        imgbuild::cluster::DEFAULT_TOML.replace("etcd = \"apt:etcd-server\"", "etcd = \"/nonexistent/etcd\"");
    assert_ne!(missing_etcd, imgbuild::cluster::DEFAULT_TOML);
    std::fs::write(&cluster, missing_etcd).unwrap();
    let run = |args: &[&str]| {
        let mut c = imgbuild_with_agent();
        c.env("XDG_DATA_HOME", &data).args(args).arg("--out").arg(&out);
        stderr_of(&mut c)
    };
    let (code, err) = run(&["--node", "nosuch"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--node: no node named \"nosuch\""), "{err}");
    let (code, err) = run(&["--role", "etcd", "--cluster", cluster.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("c.toml: artifacts.etcd: /nonexistent/etcd is not a folder"), "{err}");
    let (code, err) = run(&["--role", "worker", "--kernel", "/nonexistent-kernel"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--kernel: /nonexistent-kernel is not a folder"), "{err}");
    assert!(!data.exists(), "no CA was created");
    assert!(!out.exists(), "nothing was written");

    // A file of the user's where a node folder would go is refused, untouched.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("worker-1"), "mine").unwrap();
    let (code, err) = run(&["--node", "worker-1", "--kernel", TEST_KERNEL]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("worker-1 exists and is not a folder a build wrote"), "{err}");
    assert_eq!(std::fs::read(out.join("worker-1")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// Every file a build writes is private (0600) unless it is one of the few
/// declared public, and those hold no key or token: built here with every
/// format, etcd TLS, tokens and merge stubs.
#[test]
fn every_artifact_is_private_unless_declared_public() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.path().join("out");
    // Without the runtime: its 31 MB per image and disk change no mode.
    let cluster = common::cluster_with_images(dir.path(), "containerd = false");
    let mut c = imgbuild_with_agent();
    c.arg("--cluster").arg(&cluster);
    c.args(["--all", "--disk", "--kernel", TEST_KERNEL, "--stub-url", "http://192.0.2.1:8080", "--agent-url"])
        .arg("http://192.0.2.1:8080/assets")
        .arg("--token-secret")
        .arg(&secret)
        .arg("--out")
        .arg(&out);
    run_ok(&mut c);
    let public = |node: &str, file: &str| {
        ["vmlinuz", "cmdline", "manifest.json", "node-agent"].contains(&file)
            || file.starts_with("cni-")
            || file == format!("{node}.box.json")
    };
    let mut seen = 0;
    for node in std::fs::read_dir(&out).unwrap().map(|e| e.unwrap()) {
        let name = node.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(node.path()).unwrap().map(|e| e.unwrap()) {
            let file = f.file_name().to_string_lossy().into_owned();
            let mode = f.metadata().unwrap().permissions().mode() & 0o777;
            let bytes = std::fs::read(f.path()).unwrap();
            if file == "vmlinuz" || file == "node-agent" || file.starts_with("cni-") {
                // The inputs themselves, the same for every node: nothing of one node's.
                let first = std::fs::read(out.join("worker-1").join(&file)).unwrap();
                assert!(bytes == first, "{name}/{file} differs from worker-1's");
            } else if public(&name, &file) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("PRIVATE KEY") && !text.contains("token="), "{name}/{file} is public");
            }
            if !public(&name, &file) {
                assert_eq!(mode, 0o600, "{name}/{file} is not declared public, so it must be private");
            }
            seen += 1;
        }
    }
    assert!(seen >= 4 * 10, "every format of every node was built ({seen} files)");
    // The fetch URLs carry the node's token, as `imgbuild serve` asks for
    // every file of a node: the config holding them is private (above).
    let ign = std::fs::read_to_string(out.join("worker-1/worker-1.ign")).unwrap();
    assert!(ign.contains("http://192.0.2.1:8080/assets/worker-1/cni-bridge?token="), "{ign}");
    assert!(ign.contains("http://192.0.2.1:8080/assets/worker-1/node-agent?token="), "{ign}");
}

/// The files of `out/NODE`, sorted.
fn files_of(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn only_writes_what_was_asked_and_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    // Only Ignition: the kernel is never resolved, so an empty cache and a
    // package apt does not have are fine (an etcd node: a worker's config
    // carries the CNI plugins, which are fetched).
    let out = dir.path().join("ign");
    let mut c = imgbuild_with_agent();
    c.args(["--node", "etcd-1", "--only", "ignition", "--kernel", "apt:no-such-kernel-package", "--out"])
        .arg(&out)
        .env("IMGBUILD_CACHE", dir.path().join("empty-cache"));
    let o = run_ok(&mut c);
    assert_eq!(files_of(&out.join("etcd-1")), ["etcd-1.ign", "manifest.json"]);
    assert!(!dir.path().join("empty-cache/blobs").exists(), "nothing was downloaded");
    // The agent inside makes NODE.ign megabytes: too big for any cloud's
    // user data, which the build says, pointing at the stub.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("imgbuild: etcd-1/etcd-1.ign is ")
            && err.contains("too big for cloud user data on AWS 16 KiB, Hetzner 32 KiB, Azure 64 KiB")
            && err.contains("--stub-url"),
        "{err}"
    );
    let stub = dir.path().join("stub");
    let o = run_ok(
        imgbuild_with_agent()
            .args(["--node", "worker-1", "--only", "ignition", "--stub-url", "http://10.0.0.1:8080", "--out"])
            .arg(&stub),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("user data"), "a merge stub fits every cloud: {err}");
    let out = dir.path().join("boot");
    let only = ["--node", "worker-1", "--only", "ipxe,image", "--kernel", TEST_KERNEL, "--out"];
    run_ok(imgbuild_with_agent().args(only).arg(&out));
    assert_eq!(files_of(&out.join("worker-1")), ["cmdline", "initrd.img", "manifest.json", "vmlinuz", "worker-1.ipxe"]);
    let out = dir.path().join("disk");
    run_ok(
        imgbuild_with_agent().args(["--node", "etcd-1", "--only", "disk", "--kernel", TEST_KERNEL, "--out"]).arg(&out),
    );
    assert_eq!(files_of(&out.join("etcd-1")), ["etcd-1.qcow2", "etcd-1.raw", "manifest.json"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("etcd-1/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["artifacts"].as_array().unwrap().len(), 2, "{m}");
    let (code, err) = stderr_of(imgbuild().args(["--role", "worker", "--only", "ignition,kernel"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kernel") && err.contains("ignition, image, ipxe, box, disk"), "{err}");
}

#[test]
fn json_summary_lists_every_artifact_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let res =
        run_ok(imgbuild_with_agent().args(["--role", "worker", "--only", "ignition", "--json", "--out"]).arg(&out));
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("stdout is JSON alone");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.iter().map(|n| n["node"].as_str().unwrap()).collect::<Vec<_>>(), ["worker-1", "worker-2"]);
    for n in nodes {
        let files: Vec<&str> = n["artifacts"].as_array().unwrap().iter().map(|a| a["file"].as_str().unwrap()).collect();
        assert_eq!(files, [format!("{}.ign", n["node"].as_str().unwrap())]);
        assert_eq!(n["dir"].as_str().unwrap(), out.join(n["node"].as_str().unwrap()).display().to_string());
    }
}

#[test]
fn quiet_prints_nothing_and_version_names_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let res =
        run_ok(imgbuild_with_agent().args(["-q", "--node", "worker-1", "--only", "ignition", "--out"]).arg(dir.path()));
    assert!(res.stdout.is_empty() && res.stderr.is_empty(), "{res:?}");
    let v = run_ok(imgbuild().arg("--version"));
    let v = String::from_utf8(v.stdout).unwrap();
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert_eq!(v.trim(), format!("imgbuild {} (commit {})", env!("CARGO_PKG_VERSION"), head.trim()));
}

#[test]
fn completions_and_man_page_come_from_the_same_definitions() {
    for (shell, marker) in
        [("bash", "complete -F _imgbuild"), ("zsh", "#compdef imgbuild"), ("fish", "complete -c imgbuild")]
    {
        let out = run_ok(imgbuild().args(["completions", shell]));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("only") && text.contains("token-secret"), "{shell} completes every flag");
    }
    if which_bash() {
        let out = run_ok(imgbuild().args(["completions", "bash"]));
        let check = std::process::Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn();
        let mut child = check.unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        assert!(child.wait().unwrap().success(), "the bash completion script does not parse");
    }
    let man = String::from_utf8(run_ok(imgbuild().arg("man")).stdout).unwrap();
    assert!(man.starts_with(".ie") && man.contains(".TH imgbuild 1") && man.contains("\\-\\-only"), "{man}");
}

fn which_bash() -> bool {
    std::path::Path::new("/bin/bash").exists()
}

#[test]
fn quiet_and_verbose_go_anywhere_but_build_flags_never_with_a_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.toml");
    run_ok(imgbuild().args(["-q", "init", "--out"]).arg(&out));
    assert!(out.is_file());
    run_ok(imgbuild().args(["init", "-v", "--force", "--out"]).arg(&out));
    let (code, err) = stderr_of(imgbuild().args(["--role", "worker", "init", "--out"]).arg(dir.path().join("x.toml")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--role builds nodes; it cannot be used with the subcommand 'init'"), "{err}");
    // An empty environment variable means unset, as `VAR= cmd` intends.
    let res = imgbuild_with_agent()
        .env("IMGBUILD_CACHE", "")
        .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
        .args(["-q", "--node", "worker-1", "--only", "ignition", "--out"])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(dir.path().join("xdg-cache/imgbuild").is_dir(), "the default cache was used");
}

/// Paths are appended to `--agent-url` and `--stub-url`: a query, a
/// fragment or a stray `%` would swallow them, and Ignition reads only
/// http(s). Each is exit 2 naming the flag, with nothing written.
#[test]
fn base_urls_that_paths_cannot_follow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--agent-url", "--stub-url"] {
        for url in ["https://h/a?x=1", "https://h/a#f", "ftp://h/a", "https://h/a%", "https://h/a%zz"] {
            let out = dir.path().join("out");
            // A home of its own: no cluster CA there yet, and none may be made.
            let mut cmd = imgbuild();
            cmd.env("XDG_DATA_HOME", dir.path().join("data"));
            let (code, err) =
                stderr_of(cmd.args(["--node", "worker-1", "--only", "ignition", flag, url, "--out"]).arg(&out));
            assert_eq!(code, 2, "{flag} {url}: {err}");
            assert!(err.contains(flag) && err.lines().count() == 1, "{flag} {url}: {err}");
            assert!(!out.exists(), "{flag} {url}: something was written");
            assert!(!dir.path().join("data").exists(), "{flag} {url}: a cluster CA was made");
        }
    }
}
