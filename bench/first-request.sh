#!/usr/bin/env bash
# The agent's first etcd request (a new client: TLS handshake with
# worker-1's certificate, then one range) against an etcd on loopback,
# natively and under QEMU's TCG translator in user mode (qemu-x86_64 with
# the CPU model the VMs get). Each of RUNS fresh processes makes the request
# four times: the first round runs the code for the first time, the others
# again — under TCG, already translated. So it shows how much of the
# first boot's etcd step is translating code that runs once.
#   bash bench/first-request.sh BUILD_DIR OUT_DIR PROGRAM RUNS
# prints, in ms (medians over the runs): native_first native_again tcg_first tcg_again
set -euo pipefail
build=$1; out=$2; program=$3; runs=$4
. "$(dirname "$0")/etcd-tls.sh"
start_etcd "$build" "$out"
trap 'kill "$etcd_pid" 2>/dev/null || true' EXIT
client="$out/first-request-client"; mkdir -p "$client"; chmod 700 "$client"
cfg_of "$build/worker-1/worker-1.ign" >"$client/worker-1.json"
jq -r .etcd.tls.cert "$client/worker-1.json" >"$client/agent.crt"
(umask 077; jq -r .etcd.tls.key "$client/worker-1.json" >"$client/agent.key")
args=("https://127.0.0.1:$port" "$tls/ca.crt" "$client/agent.crt" "$client/agent.key" 4)
# median of the numbers on stdin
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rm -f "$out"/first-request.*
for mode in native tcg; do
  for ((i = 0; i < runs; i++)); do
    if [ "$mode" = native ]; then "$program" "${args[@]}"; else qemu-x86_64 -cpu qemu64 "$program" "${args[@]}"; fi >"$out/first-request.$mode.$i"
    head -1 "$out/first-request.$mode.$i" >>"$out/first-request.$mode.first"
    tail -n +2 "$out/first-request.$mode.$i" | med >>"$out/first-request.$mode.again"
  done
done
for f in native.first native.again tcg.first tcg.again; do printf '%.1f ' "$(med <"$out/first-request.$f")"; done
echo
