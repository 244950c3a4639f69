#!/usr/bin/env bash
# First boot natively: worker-1's node process (`node-agent run` with the
# node config its Ignition config carries), from exec to its `ready` line, in
# a network namespace of its own with an etcd already up that serves etcd-1's
# member certificate (TLS, client certificates) and the pod-network modules
# already loaded. Every round is a first boot: no lease in etcd, no state
# dir, no flannel.1, no bridge, no rules. The floor: the same agent's
# `check` of the same config (exec, parse, print, exit), timed the same way.
#   bash bench/native-boot.sh BUILD_DIR OUT_DIR AGENT RUNS
# prints, in ms: ready_median check_median ready_all(comma-separated)
set -euo pipefail
build=$1; out=$2; agent=$3; runs=$4
if [ -z "${IMGBUILD_BENCH_NETNS:-}" ]; then
  # Everything below, etcd included, in a namespace that dies with us.
  exec env IMGBUILD_BENCH_NETNS=1 unshare -n bash "$0" "$@"
fi
. "$(dirname "$0")/etcd-tls.sh"
ip link set lo up
start_etcd "$build" "$out"
trap 'kill "$etcd_pid" 2>/dev/null || true' EXIT
ctl() { ETCDCTL_API=3 etcdctl --endpoints "https://127.0.0.1:$port" --cacert "$tls/ca.crt" --cert "$tls/etcd.crt" --key "$tls/etcd.key" "$@"; }

dir="$out/native-boot"; rm -rf "$dir"; mkdir -p "$dir"; chmod 700 "$dir"
cfg_of "$build/worker-1/worker-1.ign" |
  jq --arg d "$dir" --arg e "https://127.0.0.1:$port" '.etcd.endpoints = [$e]
    | .paths = ((.paths // {}) + {run_flannel: "\($d)/flannel", cni_conf_dir: "\($d)/net.d", cni_ipam_dir: "\($d)/ipam", state_dir: "\($d)/state"})' \
    >"$dir/config.json"
# The node's NIC as the config finds it: its MAC and address.
ip link add eth0 type veth peer name eth0p
ip link set eth0p up
ip link set eth0 address "$(jq -r .node.mac "$dir/config.json")"
ip addr add "$(jq -r .node.address "$dir/config.json")" dev eth0
ip link set eth0 up
# Built into some kernels (then modprobe finds nothing to load).
for m in vxlan bridge veth br_netfilter nf_tables nft_chain_nat nft_masq nf_conntrack nf_nat; do modprobe -q "$m" 2>/dev/null || true; done

now() { date +%s%N; }
# One first boot: ms from exec to `ready`.
boot() {
  ctl del --prefix /coreos.com/network/subnets/ >/dev/null
  rm -rf "$dir/flannel" "$dir/net.d" "$dir/ipam" "$dir/state"
  ip link del flannel.1 2>/dev/null || true
  ip link del cni0 2>/dev/null || true
  nft flush ruleset
  local s line
  s=$(now)
  coproc AGENT { exec "$agent" run --config "$dir/config.json" 2>&1; }
  while IFS= read -r line <&"${AGENT[0]}"; do
    if [[ $line == *"ready role=worker"* ]]; then
      echo $((($(now) - s) / 1000000))
      kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
      return 0
    fi
    echo "$line" >>"$dir/agent.log"
  done
  echo "the agent exited before ready (see $dir/agent.log)" >&2
  return 1
}
check() {
  local s; s=$(now)
  "$agent" check --config "$dir/config.json" >/dev/null
  echo $((($(now) - s) / 1000000))
}
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

boot >/dev/null # the first run puts the network config, as etcd-1 would have
: >"$dir/ready"; : >"$dir/check"
for ((i = 0; i < runs; i++)); do
  boot >>"$dir/ready"
  check >>"$dir/check"
done
echo "$(med <"$dir/ready") $(med <"$dir/check") $(paste -sd, "$dir/ready")"
