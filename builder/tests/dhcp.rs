//! A worker addressed by DHCP, on VMware's vmxnet3 NIC with the cloud
//! driver set, in QEMU on a network namespace of its own:
//! QEMU's user network is the DHCP server (router 10.0.2.2, DNS 10.0.2.3)
//! and forwards 10.0.2.2 to the namespace's loopback, where a real etcd
//! listens. Nothing leaves the namespace: it has only loopback. Its blank
//! data disk becomes containerd's store once the pod network is ready.

mod common;

use std::process::Command;

use common::{imgbuild_with_agent, require_tool, run_ok, TEST_KERNEL};

#[test]
fn a_dhcp_worker_on_vmxnet3_holds_its_lease_router_and_dns_and_advertises_that_address() {
    require_tool("qemu-system-x86_64");
    require_tool("etcd");
    require_tool("etcdctl");
    require_tool("unshare");
    let tmp = tempfile::tempdir().unwrap();
    // External etcd, reached at QEMU's host address; worker-1 by DHCP.
    let text = imgbuild::cluster::DEFAULT_TOML
        .replace("tls = true", "tls = false\nendpoints = [\"http://10.0.2.2:2379\"]")
        .replace("[[node]]\nname = \"etcd-1\"\nrole = \"etcd\"\nip = \"172.17.8.101\"\n", "")
        .replace("ip = \"172.17.8.103\"", "ip = \"dhcp\"\ndrivers = \"cloud\"");
    let cluster = tmp.path().join("cluster.toml");
    std::fs::write(&cluster, text).unwrap();
    run_ok(
        imgbuild_with_agent()
            .arg("--cluster")
            .arg(&cluster)
            .args(["--node", "worker-1", "--only", "image,ignition", "--kernel", TEST_KERNEL, "--out"])
            .arg(tmp.path().join("out")),
    );
    // Flatcar's networkd unit leases the same interface (its golden is in
    // formats::ignition; here: the built config carries it).
    let ign = std::fs::read_to_string(tmp.path().join("out/worker-1/worker-1.ign")).unwrap();
    use base64::Engine;
    let unit = ign
        .split("\"data:;base64,")
        .skip(1)
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s.split('"').next()?).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .find(|t| t.starts_with("[Match]"))
        .unwrap_or_default();
    assert!(unit.starts_with("[Match]\nMACAddress=52:54:00:13:02:9f\n\n[Network]\nDHCP=ipv4\n"), "{ign}");
    let dir = tmp.path().join("out/worker-1");
    let script = format!(
        r#"set -e
ip link set lo up
etcd --name e --data-dir {tmp}/etcd --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster e=http://127.0.0.1:2380 \
  --enable-v2=false >{tmp}/etcd.log 2>&1 &
truncate -s 256M {tmp}/data.img
qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -kernel {dir}/vmlinuz -initrd {dir}/initrd.img \
  -append "$(cat {dir}/cmdline)" -netdev user,id=n0 -device vmxnet3,netdev=n0,mac=52:54:00:13:02:9f \
  -drive file={tmp}/data.img,if=virtio,format=raw >{tmp}/console 2>&1 </dev/null &
qemu=$!
for i in $(seq 1 240); do grep -q 'node-agent: containerd ready' {tmp}/console && break; sleep 1; done
ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 get --prefix /coreos.com/network/subnets/ || true
kill $qemu; kill %1 2>/dev/null || true
"#,
        tmp = tmp.path().display(),
        dir = dir.display()
    );
    let out = Command::new("unshare").args(["-n", "sh", "-c", &script]).output().unwrap();
    let leases = String::from_utf8_lossy(&out.stdout);
    let console = std::fs::read_to_string(tmp.path().join("console")).unwrap_or_default();
    assert!(out.status.success(), "{}\n{console}", String::from_utf8_lossy(&out.stderr));
    // What the kernel holds, read back by the agent: the leased address,
    // the router as default route, the DNS server in resolv.conf.
    let net = console.lines().find(|l| l.contains("node-agent: node network:")).unwrap_or_default();
    assert!(net.contains("node network: 10.0.2.15/24 on eth0 (52:54:00:13:02:9f)"), "{console}");
    assert!(net.contains(" default via 10.0.2.2") && net.contains(" dns 10.0.2.3"), "{console}");
    assert!(console.contains("node-agent: ready role=worker"), "{console}");
    let coldplug = console.lines().find(|l| l.contains("coldplug: loaded")).unwrap_or_default();
    assert!(coldplug.contains(" vmxnet3"), "{console}");
    // kubelet's runtime came up after the pod network, its images and
    // snapshots on the blank data disk, formatted for it.
    assert!(console.contains("node-agent: formatting blank data disk /dev/vda"), "{console}");
    assert!(console.contains("node-agent: containerd data on /dev/vda"), "{console}");
    assert!(console.contains("node-agent: containerd ready socket=/run/containerd/containerd.sock"), "{console}");
    // flannel's lease advertises the address actually held.
    assert!(leases.contains("\"PublicIP\":\"10.0.2.15\""), "{leases}\n{console}");
}
