#!/bin/bash
# Runs virtlogd and libvirtd for vagrant-libvirt where no service manager
# does (CI, containers). libvirtd runs inside network namespace NS, so every
# bridge and dnsmasq it makes for vagrant-libvirt's networks stays inside NS;
# run vagrant there too (`ip netns exec NS vagrant ...`).
#
#   tests/libvirt.sh start NS   start (or reuse one already inside NS)
#   tests/libvirt.sh stop NS    stop the libvirtd inside NS and delete NS
set -euo pipefail

action=${1:?usage: $0 start|stop NS}
ns=${2:?usage: $0 start|stop NS}

netns_of() { readlink "/proc/$1/ns/net"; }

case $action in
start)
  [ -e "/run/netns/$ns" ] || ip netns add "$ns"
  ip -n "$ns" link set lo up
  ours=$(ip netns exec "$ns" readlink /proc/self/ns/net)
  pgrep -x virtlogd >/dev/null || virtlogd -d
  if pid=$(pgrep -x libvirtd); then
    if [ "$(netns_of "$pid")" != "$ours" ]; then
      echo "libvirtd (pid $pid) runs outside namespace $ns; stop it (systemctl stop libvirtd" \
        "libvirtd.socket) so the test's VM networks stay inside $ns" >&2
      exit 1
    fi
  else
    ip netns exec "$ns" libvirtd -d
  fi
  for _ in $(seq 50); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -q -c qemu:///system version >/dev/null
  # vagrant-libvirt puts every machine's disk into the pool "default".
  if ! virsh -q pool-info default >/dev/null 2>&1; then
    virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
    virsh -q pool-build default >/dev/null
  fi
  case $(virsh -q pool-info default) in
  *"State:"*running*) ;;
  *) virsh -q pool-start default >/dev/null ;;
  esac
  ;;
stop)
  if [ -e "/run/netns/$ns" ]; then
    ours=$(ip netns exec "$ns" readlink /proc/self/ns/net)
    for pid in $(pgrep -x libvirtd || true); do
      [ "$(netns_of "$pid")" = "$ours" ] && kill "$pid"
    done
    ip netns pids "$ns" | xargs -r kill 2>/dev/null || true
    ip netns del "$ns"
  fi
  ;;
*)
  echo "usage: $0 start|stop NS" >&2
  exit 2
  ;;
esac
