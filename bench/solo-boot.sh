#!/usr/bin/env bash
# Boots BUILD_DIR/worker-1 alone under TCG against an etcd already up on this
# host (etcd-1's member certificate from its Ignition config), reached
# through QEMU's user network at etcd-1's address: PID 1 → ready is then all
# the agent's own work, with no other VM competing for the CPU. Each guest
# connection gets its own nc (a chardev target would carry only one, and a
# second connection would hang). pci=noacpi,nomsi as
# `imgbuild up` boots (ACPI's PCI handling costs ~1 s of emulated kernel time).
#   bash bench/solo-boot.sh BUILD_DIR OUT_DIR [UNTIL]   (console in OUT_DIR/solo.console)
# UNTIL: the console line that ends the boot (default `ready role=worker`).
set -euo pipefail
build=$1; out=$2; until=${3:-ready role=worker}
. "$(dirname "$0")/etcd-tls.sh"
start_etcd "$build" "$out"
w="$build/worker-1"
mac=$(jq -r .mac "$w/manifest.json")
qemu-system-x86_64 -accel tcg -smp 1 -m 512 -nographic -no-reboot -kernel "$w/vmlinuz" -initrd "$w/initrd.img" \
  -append "$(cat "$w/cmdline") pci=noacpi,nomsi" \
  -netdev "user,id=n0,net=172.17.8.0/24,host=172.17.8.2,dhcpstart=172.17.8.200,restrict=on,guestfwd=tcp:172.17.8.101:2379-cmd:nc 127.0.0.1 $port" \
  -device "virtio-net-pci,netdev=n0,mac=$mac" -device virtio-rng-pci </dev/null >"$out/solo.console" 2>&1 &
qemu_pid=$!
for _ in $(seq 450); do
  grep -aq "$until" "$out/solo.console" && break
  sleep 0.2
done
kill "$qemu_pid" "$etcd_pid" 2>/dev/null || true
wait 2>/dev/null || true
