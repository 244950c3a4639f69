//! Network boot: a VM with no disk PXE-boots through QEMU's own iPXE ROM
//! from `imgbuild serve`, and its agent takes its config from the served
//! Ignition URL after DHCP. All of it inside a network namespace of the
//! test, so the guest can reach nothing but the server.

mod common;
#[path = "../../node-agent/tests/common/mod.rs"]
mod hosts;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{imgbuild_with_agent, require_tool, run_ok, TEST_KERNEL};
use hosts::{Agent, Ns};

const UUID: &str = "4c4c4544-0042-3510-8052-b2c04f4e4b31";

#[test]
fn pxe_boot_from_imgbuild_serve_takes_its_config_by_url() {
    require_tool("/usr/lib/ipxe/qemu/efi-virtio.rom");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // worker-1 with its machine's SMBIOS UUID, which iPXE sends as `${uuid}`.
    let cluster = tmp.path().join("cluster.toml");
    run_ok(imgbuild_with_agent().args(["init", "--out"]).arg(&cluster));
    let text = std::fs::read_to_string(&cluster).unwrap();
    let text = text.replace("name = \"worker-1\"\n", &format!("name = \"worker-1\"\nuuid = \"{UUID}\"\n"));
    // Without the runtime: iPXE fetches the initramfs over emulated virtio,
    // and this boot stops at the node network.
    std::fs::write(&cluster, common::without_runtime(&text)).unwrap();
    run_ok(
        imgbuild_with_agent()
            .arg("--cluster")
            .arg(&cluster)
            .args(["--role", "worker", "--kernel", TEST_KERNEL, "--out"])
            .arg(&out),
    );
    assert!(std::fs::read_to_string(out.join("worker-1/manifest.json")).unwrap().contains(UUID));
    let ns = Ns::new("pxe");
    let imgbuild = env!("CARGO_BIN_EXE_imgbuild");
    let server = Agent::spawn({
        let mut c = ns.cmd(imgbuild);
        // No token secret: the DHCP server here hands every machine the same
        // `/boot.ipxe`, so this lab serves the nodes' keys openly.
        c.args(["serve", "--insecure-no-token", "--listen", "127.0.0.1:8080", "--out"]).arg(&out);
        c
    });
    server.wait_for("serving", 10);
    let mut vm = ns
        .cmd("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-boot", "n", "-uuid", UUID])
        .args(["-netdev", "user,id=n0,bootfile=http://10.0.2.2:8080/boot.ipxe"])
        .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:13:02:9f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::output_chunks(vm.stdout.take().unwrap());
    let want = "node-agent: node network: 172.17.8.103/24";
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut console = Vec::new();
    while Instant::now() < deadline && !String::from_utf8_lossy(&console).contains(want) {
        if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
            console.extend(c);
        }
    }
    let _ = vm.kill();
    let _ = vm.wait();
    let console = String::from_utf8_lossy(&console);
    let log = server.log();
    assert!(console.contains("node-agent: dhcp: 10.0.2.15/24"), "{console}\n{log}");
    assert!(
        console.contains(&format!(
            "node-agent: config from url http://10.0.2.2:8080/ignition?uuid={UUID}&mac=52:54:00:13:02:9f"
        )),
        "{console}\n{log}"
    );
    assert!(console.contains(want), "{console}\n{log}");
    for req in [
        "GET /boot.ipxe 200".to_owned(),
        format!("GET /ipxe?uuid={UUID}&mac=52%3A54%3A00%3A13%3A02%3A9f 200"),
        "GET /assets/worker-1/vmlinuz 200".to_owned(),
        format!("GET /ignition?uuid={UUID}&mac=52:54:00:13:02:9f 200"),
    ] {
        assert!(log.contains(req.as_str()), "no access log line {req}:\n{log}");
    }
}
