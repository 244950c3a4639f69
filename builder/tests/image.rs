//! The unikernel-style image on a real Debian kernel: module closure, ELF
//! closures of Debian's etcd and CNI plugins, reproducibility, a round trip
//! through GNU cpio, and a QEMU boot to the agent as PID 1.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{boot_console_until, boot_console_with, imgbuild_with_agent, run_ok, test_cache, TEST_KERNEL};
use imgbuild::image::modules::ModuleTree;
use imgbuild::sources::{kernel, Cache, SourceSpec};

fn debian_kernel() -> kernel::Kernel {
    kernel::resolve(&Cache::new(test_cache()), &SourceSpec::Apt("linux-image-cloud-amd64".into())).unwrap()
}

#[test]
fn module_closure_on_a_debian_kernel() {
    let k = debian_kernel();
    // An unpacked .deb has no modules.dep: dependencies come from .modinfo.
    assert!(!k.modules.join("modules.dep").exists());
    let tree = ModuleTree::open(&k.modules).unwrap();
    let wanted: Vec<String> = ["vxlan", "bridge", "br_netfilter", "ext4", "virtio_net"].map(String::from).to_vec();
    let c = tree.closure(&wanted).unwrap();
    let names: Vec<&str> = c.modules.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing from {names:?}"));
    // Dependencies load first.
    assert!(pos("udp_tunnel") < pos("vxlan") && pos("ip6_udp_tunnel") < pos("vxlan"), "{names:?}");
    assert!(pos("stp") < pos("bridge") && pos("llc") < pos("stp"), "{names:?}");
    assert!(pos("bridge") < pos("br_netfilter"), "{names:?}");
    assert!(pos("virtio") < pos("virtio_net") || !names.contains(&"virtio"), "{names:?}");
    assert_eq!(c.builtin, ["ext4"]);
    let err = tree.closure(&["no_such_driver".into()]).unwrap_err().to_string();
    assert!(err.contains("no_such_driver is neither"), "{err}");
}

fn build(out: &Path, role: &str) {
    run_ok(imgbuild_with_agent().args(["--role", role, "--kernel", TEST_KERNEL, "--out"]).arg(out));
}

/// Builds into `out` (which also gets the cluster file) without the
/// container runtime: these boots stop before it would start, and its 31 MB
/// only slow them under TCG.
fn build_lean(out: &Path, which: &[&str]) {
    let cluster = common::cluster_with_images(out, "containerd = false");
    run_ok(
        imgbuild_with_agent()
            .arg("--cluster")
            .arg(cluster)
            .args(which)
            .args(["--kernel", TEST_KERNEL, "--out"])
            .arg(out),
    );
}

fn unpack_initrd(path: &Path) -> Vec<u8> {
    let out = Command::new("zstd").args(["-d", "-c"]).arg(path).output().unwrap();
    assert!(out.status.success(), "initrd is not zstd: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// GNU cpio with `args`, fed `archive` on stdin; its stdout.
fn cpio(args: &[&str], archive: &[u8]) -> String {
    let mut child = Command::new("cpio").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    // Written from a thread: cpio's output can fill its pipe before it has read all input.
    let mut stdin = child.stdin.take().unwrap();
    let input = archive.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn cpio_list(archive: &[u8]) -> String {
    cpio(&["-t", "-v", "--quiet"], archive)
}

/// One file's contents from a cpio archive.
fn cpio_file(archive: &[u8], path: &str) -> String {
    cpio(&["-i", "--to-stdout", "--quiet", path], archive)
}

#[test]
fn images_are_complete_and_byte_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    for run in ["a", "b"] {
        for role in ["etcd", "master", "worker"] {
            build(&tmp.path().join(run), role);
        }
    }
    for node in ["etcd-1", "master-1", "worker-1", "worker-2"] {
        for file in ["vmlinuz", "initrd.img", "cmdline", "manifest.json", &format!("{node}.ign")] {
            let a = std::fs::read(tmp.path().join("a").join(node).join(file)).unwrap();
            let b = std::fs::read(tmp.path().join("b").join(node).join(file)).unwrap();
            assert!(a == b, "{node}/{file} differs between two builds of the same inputs");
        }
    }
    let worker = cpio_list(&unpack_initrd(&tmp.path().join("a/worker-1/initrd.img")));
    for want in
        [" init\n", "opt/cni/bin/bridge", "opt/cni/bin/host-local", "opt/cni/bin/portmap", "opt/cni/bin/loopback"]
    {
        assert!(worker.contains(want), "worker image lacks {want}:\n{worker}");
    }
    for want in
        ["lib64/ld-linux-x86-64.so.2", "libc.so.6", "vxlan.ko", "etc/node-agent/modules", "etc/node-agent/config.json"]
    {
        assert!(worker.contains(want), "worker image lacks {want}");
    }
    assert!(worker.lines().any(|l| l.starts_with("crw") && l.ends_with("dev/console")), "no /dev/console");
    // Before the node process: only what reaches etcd; the pod network's
    // drivers load in the background, the overlay's first.
    let cpio = unpack_initrd(&tmp.path().join("a/worker-1/initrd.img"));
    let (boot, pods) = (cpio_file(&cpio, "etc/node-agent/modules"), cpio_file(&cpio, "etc/node-agent/modules.pods"));
    // Device drivers are not in the boot list: PID 1 loads them for the
    // devices it finds (coldplug), from the table: modules, then aliases.
    assert!(!boot.contains("/virtio_net.ko") && !boot.contains("/virtio_blk.ko"), "{boot}");
    let table = cpio_file(&cpio, "etc/node-agent/coldplug");
    for want in [
        "alias virtio:d00000001v* virtio_net\n",
        "alias virtio:d00000002v* virtio_blk\n",
        "alias virtio:d00000004v* virtio_rng\n",
    ] {
        assert!(table.contains(want), "{want}: {table}");
    }
    let virtio_net = table.lines().find(|l| l.starts_with("module virtio_net ")).unwrap_or_default();
    assert!(virtio_net.contains("/virtio_net.ko") && virtio_net.ends_with(" net_failover"), "{table}");
    let last_module = table.lines().collect::<Vec<_>>().iter().rposition(|l| l.starts_with("module ")).unwrap();
    assert!(table.lines().position(|l| l.starts_with("alias ")).unwrap() > last_module, "{table}");
    assert!(worker.contains("/virtio_blk.ko") && !worker.contains("/virtio_console.ko"), "{worker}");
    let etcd_cpio = unpack_initrd(&tmp.path().join("a/etcd-1/initrd.img"));
    assert!(cpio_list(&etcd_cpio).contains("/virtio_blk.ko"));
    for late in ["vxlan", "nf_tables", "bridge"] {
        assert!(
            !boot.contains(&format!("/{late}.ko")) && pods.contains(&format!("/{late}.ko")),
            "{late}: {boot}\n{pods}"
        );
    }
    let first = |m: &str| pods.lines().position(|l| l.ends_with(&format!("/{m}.ko"))).unwrap();
    assert!(first("vxlan") < first("bridge") && first("bridge") < first("nf_tables"), "{pods}");
    // The reference cluster's rules are an nftables table the agent sends
    // itself: no iptables program, no xtables modules (Debian's nft, there
    // for NetworkPolicy, links libxtables for its own sake).
    assert!(!worker.contains("iptables") && !worker.contains("/xt_"), "{worker}");
    assert!(worker.contains("usr/sbin/nft") && worker.contains("/nft_ct.ko"), "{worker}");
    assert!(
        !pods.contains("/x_tables.ko") && !pods.contains("/nft_compat.ko") && pods.contains("/nft_masq.ko"),
        "{pods}"
    );
    assert!(!worker.contains("usr/bin/etcd"), "workers do not carry etcd");
    // Every entry has uid/gid 0 and the fixed mtime.
    assert!(worker.lines().all(|l| l.contains(" root     root ") || l.contains(" 0        0 ")), "{worker}");
    let etcd = cpio_list(&unpack_initrd(&tmp.path().join("a/etcd-1/initrd.img")));
    assert!(etcd.contains("usr/bin/etcd") && etcd.contains("libc.so.6") && !etcd.contains("opt/cni/bin/bridge"));
    let manifest = std::fs::read_to_string(tmp.path().join("a/worker-1/manifest.json")).unwrap();
    for f in ["vmlinuz", "initrd.img", "cmdline", "worker-1.ign"] {
        assert!(manifest.contains(&format!("\"file\": \"{f}\"")), "{manifest}");
    }
}

#[test]
fn gzip_option_gives_a_gzip_initrd() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(
        imgbuild_with_agent()
            .args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--compression", "gzip", "--out"])
            .arg(tmp.path()),
    );
    let bytes = std::fs::read(tmp.path().join("worker-1/initrd.img")).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
}

#[test]
fn worker_image_boots_to_the_agent_as_pid1() {
    let tmp = tempfile::tempdir().unwrap();
    build_lean(tmp.path(), &["--node", "worker-1"]);
    let nic = "virtio-net-pci,netdev=n0,mac=52:54:00:13:02:9f";
    let console = boot_console_with(
        &tmp.path().join("worker-1"),
        &["-netdev", "user,id=n0,restrict=on", "-device", nic],
        "node-agent: node network:",
        120,
    );
    assert!(console.contains("node-agent: PID 1 starting"), "{console}");
    assert!(console.contains("node-agent: config from embedded /etc/node-agent/config.json"), "{console}");
    assert!(console.contains("node-agent: node network: 172.17.8.103/24 on eth0 (52:54:00:13:02:9f)"), "{console}");
    // The NIC's driver came by coldplug: virtio_pci's devices, then the net one.
    let loaded = console.lines().find(|l| l.contains("coldplug: loaded")).unwrap_or_default();
    assert!(loaded.contains(" virtio_net") && loaded.contains(" qemu_fw_cfg"), "{console}");
    assert!(!loaded.contains("virtio_blk"), "no disk, no disk driver: {console}");
    assert!(!console.contains("Kernel panic"), "{console}");
    assert!(!console.contains("warning: loading modules"), "{console}");
}

/// QEMU's fw_cfg carries an Ignition config; the agent applies it and takes
/// the node config it wrote over the one embedded in the image.
#[test]
fn fw_cfg_ignition_config_wins_over_the_embedded_one() {
    let tmp = tempfile::tempdir().unwrap();
    build_lean(tmp.path(), &["--role", "worker"]);
    // worker-2's config without the agent binary: the image has its agent
    // as /init, and fw_cfg reads are slow under TCG.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("worker-2/worker-2.ign")).unwrap()).unwrap();
    let files = cfg["storage"]["files"].as_array_mut().unwrap();
    // Nor the CNI plugins Flatcar gets: the image has its own.
    files.retain(|f| f["path"] != "/opt/bin/node-agent" && !f["path"].as_str().unwrap().starts_with("/opt/cni/bin/"));
    let ign = tmp.path().join("small.ign");
    std::fs::write(&ign, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let fw_cfg = format!("name=opt/com.coreos/config,file={}", ign.display());
    let nic = "virtio-net-pci,netdev=n0,mac=52:54:00:1c:e9:fa";
    let console = boot_console_with(
        &tmp.path().join("worker-1"),
        &["-fw_cfg", &fw_cfg, "-netdev", "user,id=n0,restrict=on", "-device", nic],
        "node-agent: node network:",
        120,
    );
    assert!(console.contains("node-agent: applied Ignition config:"), "{console}");
    assert!(
        console.contains("node-agent: config from fw_cfg /sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw"),
        "{console}"
    );
    assert!(console.contains("node-agent: node network: 172.17.8.104/24 on eth0 (52:54:00:1c:e9:fa)"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

/// Ctrl-Alt-Del reaches PID 1 as SIGINT: it stops everything and reboots
/// (QEMU with -no-reboot then exits by itself).
#[test]
fn ctrl_alt_del_reboots_cleanly() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    build_lean(tmp.path(), &["--node", "worker-1"]);
    let dir = tmp.path().join("worker-1");
    let monitor = tmp.path().join("monitor.sock");
    let mut vm = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.img"))
        .arg("-append")
        .arg(std::fs::read_to_string(dir.join("cmdline")).unwrap().trim())
        .args(["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:13:02:9f"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = common::output_chunks(vm.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut console = Vec::new();
    let mut sent = false;
    let mut last_key: Option<Instant> = None;
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
            console.extend(c);
        }
        // The keyboard may still be probing under TCG: press again every 5 s.
        let text = String::from_utf8_lossy(&console);
        let due = last_key.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(5));
        if text.contains("node-agent: node network:") && !text.contains("rebooting") && due {
            let mut m = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
            m.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut prompt = [0u8; 256];
            let _ = m.read(&mut prompt);
            m.write_all(b"sendkey ctrl-alt-delete\n").unwrap();
            let _ = m.read(&mut prompt);
            last_key = Some(Instant::now());
            sent = true;
        }
        if let Ok(Some(_)) = vm.try_wait() {
            exited = true;
            break;
        }
    }
    let _ = vm.kill();
    let _ = vm.wait();
    while let Ok(c) = rx.try_recv() {
        console.extend(c);
    }
    let console = String::from_utf8_lossy(&console);
    assert!(sent, "never reached the node network:\n{console}");
    assert!(console.contains("node-agent: rebooting: stopping all processes"), "{console}");
    assert!(exited, "QEMU did not exit after the reboot:\n{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

/// As PID 1: a panic in a task of the node process ends that process, and
/// PID 1 restarts it, which becomes ready again; a panic in PID 1's own loop
/// is caught. The kernel never panics. (Failpoints armed on the command line.)
#[test]
fn a_panic_in_a_task_or_in_pid1_never_takes_the_node_down() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(imgbuild_with_agent().args(["--node", "etcd-1", "--kernel", TEST_KERNEL, "--out"]).arg(tmp.path()));
    let args = ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:44:53:ef"];
    let failpoints = "NODE_AGENT_FAILPOINT=panic-in-task,panic-in-pid1";
    let ready_twice = |c: &str| c.matches("node-agent: ready role=etcd").count() >= 2;
    let console = boot_console_until(&tmp.path().join("etcd-1"), &args, failpoints, ready_twice, 240);
    assert!(ready_twice(&console), "{console}");
    assert!(console.contains("PID 1 recovered from a panic (failpoint panic-in-pid1)"), "{console}");
    assert!(console.contains("failpoint panic-in-task: a task panicked on purpose"), "{console}");
    assert!(console.contains("the node process exits so that it is restarted whole"), "{console}");
    assert!(console.contains("the node process was killed by SIGABRT; restarting"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

/// The etcd image formats a blank data disk on first boot, keeps etcd's data
/// there, and reuses it (unformatted) on the next boot.
#[test]
fn etcd_formats_a_blank_data_disk_once() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(imgbuild_with_agent().args(["--node", "etcd-1", "--kernel", TEST_KERNEL, "--out"]).arg(tmp.path()));
    // A blank (sparse) raw disk.
    let disk = tmp.path().join("data.img");
    std::fs::File::create(&disk).unwrap().set_len(256 << 20).unwrap();
    let drive = format!("file={},if=virtio,format=raw", disk.display());
    let args = [
        "-drive",
        &drive,
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:44:53:ef",
    ];
    let first = boot_console_with(&tmp.path().join("etcd-1"), &args, "node-agent: ready role=etcd", 180);
    assert!(first.contains("node-agent: formatting blank data disk /dev/vda"), "{first}");
    assert!(first.contains("node-agent: etcd data on /dev/vda"), "{first}");
    assert!(first.contains("node-agent: ready role=etcd"), "{first}");
    // With ACPI and MSI-X (as on real machines): no kernel WARN on the way.
    assert!(!first.contains("the kernel is tainted"), "{first}");
    let second = boot_console_with(&tmp.path().join("etcd-1"), &args, "node-agent: ready role=etcd", 180);
    assert!(!second.contains("formatting"), "{second}");
    assert!(second.contains("node-agent: etcd data on /dev/vda"), "{second}");
    assert!(second.contains("node-agent: ready role=etcd"), "{second}");
}

/// The EFI disk (GPT, ESP with systemd-boot, empty data partition) boots
/// under OVMF as qcow2; the etcd role formats and uses its data partition.
#[test]
fn efi_disk_boots_under_ovmf_and_etcd_takes_the_data_partition() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    for run in ["a", "b"] {
        run_ok(
            imgbuild_with_agent()
                .args(["--node", "etcd-1", "--disk", "--kernel", TEST_KERNEL, "--out"])
                .arg(tmp.path().join(run)),
        );
    }
    for f in ["etcd-1.raw", "etcd-1.qcow2"] {
        let a = std::fs::read(tmp.path().join("a/etcd-1").join(f)).unwrap();
        assert!(a == std::fs::read(tmp.path().join("b/etcd-1").join(f)).unwrap(), "{f} is not reproducible");
    }
    let disk = tmp.path().join("a/etcd-1/etcd-1.qcow2");
    // Our qcow2 writer, judged by QEMU's own tool: consistent, and the same
    // disk as the raw image.
    common::require_tool("qemu-img");
    run_ok(std::process::Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(&disk));
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(tmp.path().join("a/etcd-1/etcd-1.raw"))
            .arg(&disk),
    );
    let mut vm = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-bios", "/usr/share/ovmf/OVMF.fd"])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", disk.display()))
        .args(["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:44:53:ef"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = common::output_chunks(vm.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut console = Vec::new();
    while Instant::now() < deadline && !String::from_utf8_lossy(&console).contains("node-agent: ready role=etcd") {
        if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
            console.extend(c);
        }
    }
    let _ = vm.kill();
    let _ = vm.wait();
    let console = String::from_utf8_lossy(&console);
    assert!(console.contains("node-agent: PID 1 starting"), "{console}");
    assert!(console.contains("node-agent: formatting blank data disk /dev/vda2"), "{console}");
    assert!(console.contains("node-agent: etcd data on /dev/vda2"), "{console}");
    assert!(console.contains("node-agent: ready role=etcd"), "{console}");
}

/// Devices found as udev finds them: a NIC the image has no driver for is
/// named by its PCI IDs (and the node still comes up on the one it has); a
/// disk hot-added after boot gets its driver from the kernel's uevent.
#[test]
fn drivers_by_coldplug_and_hotplug_and_a_nic_without_one_is_named() {
    common::require_tool("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    build_lean(tmp.path(), &["--node", "worker-1"]);
    let dir = tmp.path().join("worker-1");
    let disk = tmp.path().join("hot.img");
    std::fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
    let monitor = tmp.path().join("monitor.sock");
    let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-kernel"])
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.img"))
        .args(["-append", cmdline.trim()])
        .args(["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:13:02:9f"])
        // Intel's 82574L: the cloud kernel has no e1000e.
        .args(["-netdev", "user,id=n1,restrict=on", "-device", "e1000e,netdev=n1"])
        .args(["-drive", &format!("if=none,id=hot,format=raw,file={}", disk.display())])
        .args(["-monitor", &format!("unix:{},server=on,wait=off", monitor.display())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::output_chunks(child.stdout.take().unwrap());
    let mut console = String::new();
    let wait_for = |console: &mut String, want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while !console.contains(want) && std::time::Instant::now() < deadline {
            if let Ok(c) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                console.push_str(&String::from_utf8_lossy(&c));
            }
        }
        console.contains(want)
    };
    let up = wait_for(&mut console, "node-agent: node network:");
    let mut added = false;
    if up {
        let mut m = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
        m.write_all(b"device_add virtio-blk-pci,drive=hot,id=hotdisk\n").unwrap();
        added = wait_for(&mut console, "hotplug: loaded virtio_blk for virtio:d00000002v00001AF4");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "{console}");
    assert!(
        console
            .contains("warning: no driver in this image for network device PCI 8086:10d3 (class 0x020000) at 0000:00:"),
        "{console}"
    );
    assert!(added, "{console}");
    assert!(console.contains("hotplug: loaded virtio_blk for virtio:d00000002v00001AF4"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

/// The hardware set follows its kernel (Debian's generic one: the cloud
/// kernel has no Intel NIC) and boots an etcd node on an emulated server:
/// Intel 82574L (e1000e) NIC, NVMe data disk.
#[test]
fn hardware_set_boots_etcd_on_e1000e_and_nvme() {
    common::require_tool("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = common::cluster_with_images(tmp.path(), "drivers = \"hardware\"");
    run_ok(imgbuild_with_agent().arg("--cluster").arg(&cluster).args(["--node", "etcd-1", "--out"]).arg(tmp.path()));
    let dir = tmp.path().join("etcd-1");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let cpio = unpack_initrd(&dir.join("initrd.img"));
    let table = cpio_file(&cpio, "etc/node-agent/coldplug");
    for m in ["e1000e", "igb", "ixgbe", "nvme", "ahci", "megaraid_sas"] {
        assert!(table.lines().any(|l| l.starts_with(&format!("module {m} "))), "{m}: {manifest}");
    }
    assert!(!table.contains("module virtio_net "), "the hardware set is not the virtio one");
    let disk = tmp.path().join("data.img");
    std::fs::File::create(&disk).unwrap().set_len(256 << 20).unwrap();
    let drive = format!("file={},if=none,id=d,format=raw", disk.display());
    let args = [
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        "e1000e,netdev=n0,mac=52:54:00:44:53:ef",
        "-drive",
        &drive,
        "-device",
        "nvme,drive=d,serial=data",
    ];
    let console = boot_console_with(&dir, &args, "node-agent: ready role=etcd", 240);
    let kernel = console.lines().map(str::trim_end).find(|l| l.starts_with("node-agent: kernel ")).unwrap_or_default();
    assert!(kernel.ends_with("-amd64") && !kernel.ends_with("-cloud-amd64"), "the generic kernel: {console}");
    let coldplug = console.lines().find(|l| l.contains("coldplug: loaded")).unwrap_or_default();
    assert!(coldplug.contains(" e1000e") && coldplug.contains(" nvme"), "{console}");
    assert!(console.contains("node-agent: etcd data on /dev/nvme0n1"), "{console}");
    assert!(console.contains("node-agent: ready role=etcd"), "{console}");
}

/// A driver the chosen kernel lacks is refused before anything is written,
/// naming the field, the module and the kernel.
#[test]
fn a_driver_the_kernel_lacks_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = common::cluster_with_images(tmp.path(), "drivers = [\"virtio_net\", \"e1000e\"]");
    let out = tmp.path().join("out");
    let o = imgbuild_with_agent()
        .arg("--cluster")
        .arg(&cluster)
        .args(["--node", "worker-1", "--kernel", TEST_KERNEL, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster.toml: images.drivers: kernel 6.") && err.contains("has no module e1000e"), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    assert!(!out.join("worker-1").exists(), "nothing is written");
}

/// OpenStack's config drive, as Nova makes it: `ignition.platform.id=openstack`
/// and the node's Ignition config as `openstack/latest/user_data` on a real
/// ISO 9660 image (a CD-ROM on IDE, as KVM attaches it) and on a real FAT
/// image (a disk, labelled as mkfs.vfat writes it: CONFIG-2).
#[test]
fn openstack_config_drive_on_iso_and_fat() {
    for tool in ["qemu-system-x86_64", "genisoimage", "mkfs.vfat", "mcopy", "mmd"] {
        common::require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let cluster = common::cluster_with_images(tmp.path(), "drivers = \"cloud\"");
    let out = tmp.path().join("out");
    run_ok(
        imgbuild_with_agent()
            .arg("--cluster")
            .arg(&cluster)
            .args(["--node", "worker-1", "--only", "image,ignition", "--kernel", TEST_KERNEL, "--out"])
            .arg(&out),
    );
    let ign = out.join("worker-1/worker-1.ign");
    let tree = tmp.path().join("drive");
    std::fs::create_dir_all(tree.join("openstack/latest")).unwrap();
    std::fs::copy(&ign, tree.join("openstack/latest/user_data")).unwrap();
    let iso = tmp.path().join("config.iso");
    run_ok(Command::new("genisoimage").args(["-quiet", "-V", "config-2", "-r", "-J", "-o"]).arg(&iso).arg(&tree));
    let fat = tmp.path().join("config.fat");
    // 64 MiB, as Nova makes a vfat config drive (a worker's config carries
    // the agent and the CNI plugins).
    run_ok(Command::new("mkfs.vfat").args(["-C", "-n", "CONFIG-2"]).arg(&fat).arg("65536"));
    run_ok(Command::new("mmd").arg("-i").arg(&fat).args(["::openstack", "::openstack/latest"]));
    run_ok(Command::new("mcopy").arg("-i").arg(&fat).arg(&ign).arg("::openstack/latest/user_data"));
    let append = "ignition.platform.id=openstack";
    let nic = ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:13:02:9f"];
    let cdrom = format!("file={},media=cdrom,readonly=on", iso.display());
    let disk = format!("file={},if=virtio,format=raw,readonly=on", fat.display());
    for (drive, dev) in [(&cdrom, "/dev/sr0 (iso9660)"), (&disk, "/dev/vda (vfat)")] {
        let mut args = nic.to_vec();
        args.extend(["-drive", drive.as_str()]);
        let done = |c: &str| c.contains("node-agent: node network:") || c.contains("Kernel panic");
        let console = boot_console_until(&out.join("worker-1"), &args, append, done, 240);
        assert!(console.contains("node-agent: config from config drive labelled config-2"), "{dev}: {console}");
        assert!(console.contains(&format!("config drive: {dev}")), "{dev}: {console}");
        assert!(console.contains("node-agent: applied Ignition config:"), "{dev}: {console}");
        assert!(console.contains("node-agent: node network: 172.17.8.103/24 on eth0"), "{dev}: {console}");
    }
}
