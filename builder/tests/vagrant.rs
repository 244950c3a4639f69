//! Vagrant boxes against the real Vagrant and vagrant-libvirt: `vagrant box
//! add` of every box and catalog, `vagrant validate`, and `vagrant up` of the
//! reference cluster from `vagrant/Vagrantfile`, with libvirtd and every VM
//! network inside a namespace the test makes (tests/libvirt.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{imgbuild, imgbuild_with_agent, require_tool, run_ok, TEST_KERNEL};

const NODES: [&str; 4] = ["etcd-1", "master-1", "worker-1", "worker-2"];
const NETNS: &str = "imgbuild-vagrant";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One build of the whole reference cluster, shared by the tests here.
fn built() -> &'static Path {
    static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("vagrant-out").tempdir_in(scratch()).unwrap();
        run_ok(imgbuild_with_agent().args(["--all", "--kernel", TEST_KERNEL, "--out"]).arg(dir.path()));
        dir
    })
    .path()
}

/// Under target/: QEMU (as libvirt-qemu) must be able to read what it boots.
fn scratch() -> PathBuf {
    let d = repo().join("target/vagrant-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vagrant(home: &Path) -> Command {
    require_tool("vagrant");
    let mut c = Command::new("vagrant");
    c.env("VAGRANT_HOME", home)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_BOX_UPDATE_CHECK_DISABLE", "1")
        .env("IMGBUILD_OUT", built())
        .env("IMGBUILD_MANAGEMENT_MODE", "none")
        .env("IMGBUILD_LIBVIRT_DRIVER", "qemu");
    c
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `imgbuild serve` of a build made with `args` + its own base URL.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds into `out` with `args` followed by the server's base URL (so
/// `args` ends with `--box-url`), then serves that build on loopback.
fn serve_build(out: &Path, args: &[&str]) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    run_ok(imgbuild_with_agent().args(args).arg(&base).args(["--kernel", TEST_KERNEL, "--out"]).arg(out));
    let child = imgbuild()
        .args(["serve", "--insecure-no-token", "--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = Served(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return served;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("imgbuild serve did not listen on {base}");
}

/// Whether `vagrant box list` has `name` with `details` (columns are padded).
fn listed(list: &str, name: &str, details: &str) -> bool {
    list.lines().any(|l| l.split_whitespace().next() == Some(name) && l.contains(details))
}

#[test]
fn vagrant_adds_every_box_and_every_catalog() {
    let home = tempfile::Builder::new().prefix("vagrant-home").tempdir_in(scratch()).unwrap();
    for node in NODES {
        let dir = built().join(node);
        let file = dir.join(format!("{node}.box"));
        run_ok(vagrant(home.path()).args(["box", "add", "--name", &format!("plain/{node}")]).arg(&file));
    }
    // Catalogs name their boxes relative to themselves unless built with
    // --box-url; `imgbuild serve` serves every box of such a build.
    let served = tempfile::Builder::new().prefix("vagrant-served").tempdir_in(scratch()).unwrap();
    let _server = serve_build(served.path(), &["--all", "--box-url"]);
    for node in NODES {
        // The catalog's checksum is checked by Vagrant as it adds the box.
        run_ok(vagrant(home.path()).args(["box", "add"]).arg(served.path().join(format!("{node}/{node}.box.json"))));
    }

    let list = text(&run_ok(vagrant(home.path()).args(["box", "list"])));
    for node in NODES {
        assert!(listed(&list, &format!("plain/{node}"), "(libvirt, 0"), "{list}");
        assert!(listed(&list, &format!("imgbuild/{node}"), "(libvirt, 0.1.0"), "{list}");
    }
}

#[test]
fn a_catalog_served_over_http_gives_its_version_and_a_bad_checksum_is_refused() {
    let out = tempfile::Builder::new().prefix("vagrant-served").tempdir_in(scratch()).unwrap();
    let server = serve_build(out.path(), &["--node", "worker-1", "--box-version", "2.1.0", "--box-url"]);
    let home = tempfile::Builder::new().prefix("vagrant-home").tempdir_in(scratch()).unwrap();
    let catalog = out.path().join("worker-1/worker-1.box.json");
    let added = vagrant(home.path()).args(["box", "add"]).arg(&catalog).output().unwrap();
    // A catalog whose checksum does not match the box must be refused.
    let bad = out.path().join("bad.json");
    let text_ok = std::fs::read_to_string(&catalog).unwrap();
    let sha = text_ok.split("\"checksum\": \"").nth(1).unwrap()[..64].to_owned();
    std::fs::write(&bad, text_ok.replace(&sha, &"0".repeat(64)).replace("imgbuild/worker-1", "bad/worker-1")).unwrap();
    let refused = vagrant(home.path()).args(["box", "add"]).arg(&bad).output().unwrap();
    drop(server);
    assert!(added.status.success(), "{}{}", text(&added), String::from_utf8_lossy(&added.stderr));
    let list = text(&run_ok(vagrant(home.path()).args(["box", "list"])));
    assert!(listed(&list, "imgbuild/worker-1", "(libvirt, 2.1.0"), "{list}");
    assert!(!refused.status.success(), "a wrong checksum was accepted");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn the_reference_vagrantfile_validates() {
    let home = tempfile::Builder::new().prefix("vagrant-home").tempdir_in(scratch()).unwrap();
    let out = run_ok(vagrant(home.path()).arg("validate").current_dir(repo().join("vagrant")));
    assert!(text(&out).contains("validated successfully"), "{}", text(&out));
    // Without boxes it says what to do.
    let empty = tempfile::tempdir().unwrap();
    let o = vagrant(home.path())
        .arg("validate")
        .env("IMGBUILD_OUT", empty.path())
        .current_dir(repo().join("vagrant"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("build the boxes first"), "{o:?}");
}

/// Stops libvirtd and the namespace however the test ends.
struct Libvirt;

impl Libvirt {
    fn start() -> Libvirt {
        require_tool("libvirtd");
        run_ok(Command::new("bash").arg(repo().join("tests/libvirt.sh")).args(["start", NETNS]));
        Libvirt
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(repo().join("tests/libvirt.sh")).args(["stop", NETNS]).status();
    }
}

const LIBVIRT_BOOT: &str = "/var/lib/libvirt/boot";

/// The box Vagrantfile's boot copies (`imgbuild-DIGEST-FILE`) there now.
fn boot_copies() -> std::collections::BTreeSet<std::ffi::OsString> {
    let entries = std::fs::read_dir(LIBVIRT_BOOT).into_iter().flatten().flatten();
    entries.map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with("imgbuild-")).collect()
}

/// Destroys the machines however the test ends, then removes the boot
/// copies their `vagrant up` made: test runs must not fill libvirt's boot
/// directory (copies that were there before are left alone).
struct Cluster<'a>(&'a Path, std::collections::BTreeSet<std::ffi::OsString>);

impl<'a> Cluster<'a> {
    fn new(home: &'a Path) -> Self {
        Cluster(home, boot_copies())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = in_netns(self.0, &["destroy", "-f"]);
        for name in boot_copies().difference(&self.1) {
            let _ = std::fs::remove_file(Path::new(LIBVIRT_BOOT).join(name));
        }
    }
}

fn in_netns(home: &Path, args: &[&str]) -> Output {
    let v = vagrant(home);
    let mut c = Command::new("ip");
    c.args(["netns", "exec", NETNS, "vagrant"]).args(args).current_dir(repo().join("vagrant"));
    for (k, val) in v.get_envs() {
        if let Some(val) = val {
            c.env(k, val);
        }
    }
    c.output().unwrap()
}

fn ssh(home: &Path, node: &str, cmd: &str) -> String {
    let o = in_netns(home, &["ssh", node, "-c", cmd]);
    assert!(o.status.success(), "vagrant ssh {node} -c {cmd:?}: {}{}", text(&o), String::from_utf8_lossy(&o.stderr));
    text(&o)
}

/// Retries `cmd` over `vagrant ssh` until it succeeds (at most 3 minutes).
fn wait_until(home: &Path, node: &str, cmd: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let o = in_netns(home, &["ssh", node, "-c", cmd]);
        if o.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node}: `{cmd}` never succeeded: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn subnet(env: &str) -> ipnet::Ipv4Net {
    let line = env.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET=")).expect("FLANNEL_SUBNET");
    line.trim().parse::<ipnet::Ipv4Net>().unwrap().trunc()
}

#[test]
fn vagrant_up_gives_a_cluster_whose_pods_reach_each_other() {
    let home = tempfile::Builder::new().prefix("vagrant-home").tempdir_in(scratch()).unwrap();
    let _libvirt = Libvirt::start();
    let cluster = Cluster::new(home.path());
    let up = in_netns(cluster.0, &["up"]);
    assert!(up.status.success(), "vagrant up: {}{}", text(&up), String::from_utf8_lossy(&up.stderr));
    // `vagrant up` returns once SSH answers; the overlay follows shortly.
    for node in ["worker-1", "worker-2"] {
        wait_until(cluster.0, node, "test -s /run/flannel/subnet.env");
    }
    // Each machine booted its own box (the agent names the host from its config)
    // from boot copies whose names are their digests.
    for node in ["etcd-1", "master-1", "worker-1", "worker-2"] {
        assert_eq!(ssh(cluster.0, node, "hostname").trim(), node);
    }
    for e in std::fs::read_dir(LIBVIRT_BOOT).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(digest) = name.strip_prefix("imgbuild-").and_then(|n| n.split('-').next()) {
            use sha2::Digest;
            let sha = hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap()));
            assert!(sha.starts_with(digest), "{name} holds other bytes ({sha})");
        }
    }
    let w2 = ssh(cluster.0, "worker-2", "cat /run/flannel/subnet.env");
    // worker-2's probe pod: a sandbox its containerd made, at the address
    // CRI gave it (the agent says which).
    wait_until(cluster.0, "worker-2", "test -s /run/node-agent/probe-pod");
    let pod = ssh(cluster.0, "worker-2", "cat /run/node-agent/probe-pod");
    let peer: std::net::Ipv4Addr =
        pod.split("ip=").nth(1).map(str::trim).unwrap_or_default().parse().unwrap_or_else(|_| panic!("{pod}"));
    assert!(subnet(&w2).contains(&peer), "{pod}");
    wait_until(cluster.0, "worker-1", "test -s /run/node-agent/probe-pod");
    let w1 = ssh(
        cluster.0,
        "worker-1",
        &format!("cat /run/flannel/subnet.env; node-agent probe send --netns /run/netns/probe --to {peer}:7946"),
    );
    assert!(w1.contains("FLANNEL_SUBNET=10.1."), "{w1}");
    assert_ne!(subnet(&w1), subnet(&w2));
    assert!(w1.contains(&format!("probe {peer}:7946: reached")), "{w1}");

    // A crashing node process never takes the node down: PID 1 restarts it,
    // and it comes back with the same lease.
    // PID 1 runs it as `/proc/self/exe boot`.
    const NODE_PID: &str = "ps | awk '$NF == \"boot\" {print $1}'";
    let pid = ssh(cluster.0, "worker-1", NODE_PID).trim().to_owned();
    assert!(pid.parse::<u32>().is_ok(), "no node process in ps: {pid:?}");
    // SIGABRT, as a failed assertion or abort would end it (sshd, its child,
    // goes with it, so this session may end before it answers).
    let _ = in_netns(cluster.0, &["ssh", "worker-1", "-c", &format!("kill -ABRT {pid}")]);
    wait_until(cluster.0, "worker-1", &format!("p=$({NODE_PID}) && [ -n \"$p\" ] && [ \"$p\" != {pid} ]"));
    wait_until(
        cluster.0,
        "worker-1",
        &format!("node-agent probe send --netns /run/netns/probe --to {peer}:7946 --tries 5"),
    );
    let after = ssh(cluster.0, "worker-1", "cat /run/flannel/subnet.env");
    assert_eq!(subnet(&after), subnet(&w1), "the restarted node process kept its lease");
    let destroyed = in_netns(cluster.0, &["destroy", "-f"]);
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    let made: Vec<_> = boot_copies().difference(&cluster.1).cloned().collect();
    drop(cluster);
    assert!(boot_copies().iter().all(|n| !made.contains(n)), "boot copies left behind: {made:?}");
}

/// Loads box Vagrantfiles the way Vagrant does (a `Vagrant.configure` that
/// yields a provider config and records what it is given), many at once:
/// THREADS threads in each of PROCS Ruby processes, every one reading one of
/// BOXES boxes that carry the same kernel and initramfs, so all race for the
/// same boot copies in libvirt's boot directory.
const LOAD_BOXES: &str = r#"
class Recorder
  def initialize; @set = {}; end
  attr_reader :set
  def method_missing(name, *args, &blk)
    @set[name.to_s.chomp("=")] = args.first if name.to_s.end_with?("=")
    self
  end
  def respond_to_missing?(*) = true
end
class Config
  def initialize(lv); @lv = lv; end
  def vm = self
  def ssh = Recorder.new
  def synced_folder(*) = nil
  def provider(_name) = yield(@lv)
end
module Vagrant
  def self.configure(_v) = yield(Config.new(Thread.current[:lv]))
end
boxes = ARGV
start_at = Float(ENV.fetch("START_AT"))
threads = (0...Integer(ENV.fetch("THREADS"))).map do |i|
  Thread.new do
    Thread.current[:lv] = Recorder.new
    # Every thread of every process starts at one moment: the race is real.
    sleep([start_at - Time.now.to_f, 0].max)
    load File.join(boxes[i % boxes.size], "Vagrantfile")
    Thread.current[:lv].set.values_at("kernel", "initrd").join(" ")
  end
end
puts threads.map(&:value)
"#;

#[test]
fn box_vagrantfiles_loaded_at_once_share_one_checked_boot_copy() {
    require_tool("ruby");
    let dir = tempfile::Builder::new().prefix("boxes").tempdir_in(scratch()).unwrap();
    // Contents of this run only, so the copies' names are this run's too.
    let nonce = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let kernel = [nonce.as_bytes(), &[7u8; 3 << 20]].concat();
    let initrd = [&vec![9u8; 32 << 20][..], nonce.as_bytes()].concat();
    let boxes: Vec<PathBuf> = (0..4)
        .map(|i| {
            let node = format!("worker-{i}");
            let spec = imgbuild::formats::vagrant::BoxSpec {
                node: &node,
                role: "worker",
                cluster: "race",
                vmlinuz: &kernel,
                initrd: &initrd,
                cmdline: "console=ttyS0",
                mtime: 0,
            };
            let d = dir.path().join(&node);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("Vagrantfile"), imgbuild::formats::vagrant::box_vagrantfile(&spec)).unwrap();
            std::fs::write(d.join("vmlinuz"), &kernel).unwrap();
            std::fs::write(d.join("initrd.img"), &initrd).unwrap();
            d
        })
        .collect();
    std::fs::create_dir_all(LIBVIRT_BOOT).unwrap();
    let before = boot_copies();
    let start_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() + 1.5;
    let procs: Vec<_> = (0..4)
        .map(|_| {
            Command::new("ruby")
                .args(["-e", LOAD_BOXES])
                .args(&boxes)
                .env("THREADS", "16")
                .env("START_AT", start_at.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = procs.into_iter().map(|p| p.wait_with_output().unwrap()).collect();
    let made: Vec<_> = boot_copies().difference(&before).cloned().collect();
    let mut intact = Vec::new();
    for name in &made {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(LIBVIRT_BOOT).join(name);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
        let bytes = std::fs::read(&path).unwrap_or_default();
        intact.push((name.clone(), mode == 0o644 && (bytes == kernel || bytes == initrd)));
        let _ = std::fs::remove_file(path);
    }
    let mut paths = std::collections::BTreeSet::new();
    for o in &outputs {
        assert!(o.status.success(), "a box Vagrantfile failed to load:\n{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), 16);
        paths.extend(lines.into_iter().map(str::to_owned));
    }
    assert_eq!(paths.len(), 1, "every machine boots the same two copies: {paths:?}");
    let names: Vec<String> = made.iter().map(|n| n.to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "exactly the two copies, no temporary left behind: {names:?}");
    assert!(intact.iter().all(|(_, ok)| *ok), "each copy is its file, mode 0644: {intact:?}");
    let line = paths.into_iter().next().unwrap();
    let (k, i) = line.split_once(' ').unwrap();
    assert!(k.starts_with(LIBVIRT_BOOT) && k.ends_with("-vmlinuz") && i.ends_with("-initrd.img"), "{line}");
}
