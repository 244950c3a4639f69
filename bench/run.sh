#!/usr/bin/env bash
# imgbuild's benchmarks, each beside a baseline measured in the same run
# (these machines are noisy: compare the ratios, not the absolute times).
#
#   bash bench/run.sh           full run: rewrites BENCHMARKS.md and bench/scale.png
#   bash bench/run.sh --quick   every benchmark once at its smallest size (CI)
#
# As root on Debian (it installs what it measures against). Results also go
# to bench/out/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
out=$PWD/bench/out
rm -rf "$out" && mkdir -p "$out"

bash tests/install-deps.sh
bash bench/install-deps.sh
cargo build --release --locked -q
img=target/x86_64-unknown-linux-gnu/release/imgbuild
agent=target/x86_64-unknown-linux-gnu/release/node-agent
export IMGBUILD_CACHE=${IMGBUILD_CACHE:-$PWD/target/imgbuild-cache}
# The cluster CA the builds create stays with the results, not in $HOME.
export XDG_DATA_HOME=$out/data
runs=$((quick ? 1 : 5))

# The same kernel for us and for mkinitramfs: the installed cloud kernel.
kver=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -1)
kernel="apt:linux-image-$kver"

# Field $1 (default 1) of the middle line of stdin, lines ordered by their
# first field: the median run.
middle() { sort -g | awk -v f="${1:-1}" '{a[NR]=$f} END {print a[int((NR+1)/2)]}'; }

# Median wall time of a command over $runs runs, in seconds.
median() {
  local times=() i s
  for ((i = 0; i < runs; i++)); do
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    times+=("$(echo "$(date +%s.%N) - $s" | bc -l)")
  done
  printf %.3f "$(printf '%s\n' "${times[@]}" | middle)"
}
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }

# --- build -----------------------------------------------------------------
"$img" --node worker-1 --kernel "$kernel" --out "$out/build" >/dev/null # warm the caches
t_ours=$(median "$img" --node worker-1 --kernel "$kernel" --out "$out/build")
t_all=$(median "$img" --all --kernel "$kernel" --out "$out/build-all")
t_mkinitramfs=$(median mkinitramfs -o "$out/mkinitramfs.img" "$kver")
# Our initramfs step alone (assembling the tree, cpio, zstd) from the phase timings.
# The median of $runs builds, as for the baseline below.
for ((i = 0; i < runs; i++)); do
  IMGBUILD_TIMINGS=1 "$img" --node worker-1 --kernel "$kernel" --out "$out/build" 2>"$out/timings" >/dev/null
  awk '/timing (image-assembly worker|initramfs worker-1) / {s += substr($NF, 1, length($NF) - 1)} END {printf "%.3f\n", s}' "$out/timings"
done >"$out/step-runs"
t_step=$(middle <"$out/step-runs")
# The same tree through find | cpio | zstd (both cores, like ours).
mkdir -p "$out/tree"
(cd "$out/tree" && zstd -dc ../build/worker-1/initrd.img | cpio -id --quiet)
t_cpio=$(median sh -c "cd $out/tree && find . | cpio -o -H newc --quiet | zstd -q -3 -T2 > ../find-cpio.zst")
"$img" --node worker-1 --kernel "$kernel" --out "$out/build2" >/dev/null
same=no
cmp -s "$out/build/worker-1/initrd.img" "$out/build2/worker-1/initrd.img" && same=yes

# --- sizes -----------------------------------------------------------------
agent_bytes=$(stat -c %s "$agent")
"$img" --all --kernel "$kernel" --agent-url http://192.0.2.1/agent --out "$out/remote" >/dev/null
ign_rows=""
for node in etcd-1 master-1 worker-1; do
  role=${node%-1}
  ign_rows+="| Ignition config, $role | $(stat -c %s "$out/build-all/$node/$node.ign") B | $(stat -c %s "$out/remote/$node/$node.ign") B (--agent-url) | agent embedded vs fetched by URL |"$'\n'
done

# --- control plane -----------------------------------------------------------
cp_args=(--csv "$out/scale.csv")
((quick)) && cp_args+=(--quick)
cargo bench -q -p node-agent --bench control_plane -- "${cp_args[@]}" 2>"$out/control_plane.err" | grep '^|' | tail -n +3 >"$out/control_plane.md"

# --- the first etcd request: translating code vs running it -----------------
# In the workspace, so its crates get the features the shipped agent gets.
cargo build --release --locked -q --workspace --example first_request
fr=$(bash bench/first-request.sh "$out/build-all" "$out" target/x86_64-unknown-linux-gnu/release/examples/first_request "$runs")
read -r fr_native fr_native_again fr_tcg fr_tcg_again <<<"$fr"
fr_rows="| the agent's first etcd request (new client: TLS handshake + one range), under TCG (qemu-x86_64, user mode), median of $runs processes | $fr_tcg ms | $fr_tcg_again ms (the same request again in that process: code already translated) | $(ratio "$fr_tcg" "$fr_tcg_again") | the first time is translating |"$'\n'
fr_rows+="| … the same natively | $fr_native ms | $fr_native_again ms (again) | $(ratio "$fr_native" "$fr_native_again") | |"$'\n'

# --- first boot natively: the node process alone, etcd (TLS) already up ----
nb_runs=$((quick ? 1 : 10))
read -r nb_ready nb_check nb_all <<<"$(bash bench/native-boot.sh "$out/build-all" "$out" "$agent" "$nb_runs")"
native_rows="| worker-1's node process, exec → \`ready\` (a first boot: no lease, no state, no device), median of $nb_runs (all: $nb_all ms) | $nb_ready ms | $nb_check ms (the same agent's \`check\` of that config) | $(ratio "$nb_ready" "$nb_check") | ≤ 100 ms |"$'\n'

# --- imgbuild serve under a fleet, against nginx -----------------------------
fleet_clients=$((quick ? 20 : 200))
cargo bench -q -p imgbuild --bench serve_fleet -- --out "$out/build-all" --clients "$fleet_clients" --rounds $((quick ? 1 : 3)) \
  2>"$out/serve_fleet.err" | grep '^|' >"$out/serve_fleet.md"

# --- driver sets: image size and PID 1 -> ready per set, against virtio ------
bash bench/driver-sets.sh "$out" "$PWD/$img" "$PWD/$agent" "$runs" 2>"$out/driver-sets.err" >"$out/driver-sets.md"

# --- kubelet's runtime: CRI sandboxes, and the worker image with containerd --
cargo test -q --locked -p node-agent --test cri -- --ignored --exact bench_sandbox_to_ip --nocapture \
  2>"$out/cri.err" | grep '^|' >"$out/runtime.md"
bash bench/runtime.sh "$out" "$PWD/$img" "$PWD/$agent" "$kernel" "$runs" 2>"$out/runtime.err" >>"$out/runtime.md"

# --- NetworkPolicy: a change enforced on two nodes, and TCP with policies ----
BENCH_CHANGES=$((quick ? 5 : 30)) cargo test -q --locked -p node-agent --test netpol -- --ignored --exact \
  bench_policy_change_to_enforced --nocapture 2>"$out/netpol.err" | grep '^|' >"$out/netpol.md"

# --- boot ------------------------------------------------------------------
boot_rows="| first boot | skipped in quick mode | | | |"$'\n'
if ((!quick)); then
  # The floor: the same kernel and the worker's initramfs with no network,
  # up to PID 1, under TCG.
  s=$(date +%s.%N)
  timeout 120 qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot \
    -kernel "$out/build/worker-1/vmlinuz" -initrd "$out/build/worker-1/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet rdinit=/nonexistent pci=noacpi,nomsi cryptomgr.notests" </dev/null >"$out/floor.console" 2>&1 || true
  t_floor=$(echo "$(date +%s.%N) - $s" | bc -l)
  s=$(date +%s.%N)
  "$img" up --check --kernel "$kernel" --out "$out/up" >"$out/up.log" 2>&1
  t_up=$(echo "$(date +%s.%N) - $s" | bc -l)
  # Seconds (uptime=) and CPU milliseconds (cpu=) on the first console line matching $2.
  at() { grep -a -m1 "$2" "$1" | sed -n 's/.*uptime=\([0-9.]*\)s.*/\1/p'; }
  ms() { grep -a -m1 "$2" "$1" | sed -n 's/.*cpu=\([0-9]*\)ms.*/\1/p'; }
  s3() { printf %.3f "$(echo "$1" | bc -l)"; }
  boot_rows="| \`imgbuild up --check\`, reference cluster (build + boot + probes) | $(printf %.1f "$t_up") s | $(printf %.1f "$t_floor") s (a kernel boot that panics at once) | $(ratio "$t_up" "$t_floor") | ≤ 3× the floor |"$'\n'
  c="$out/up/.up/worker-1.console"
  boot_rows+="| in the cluster, worker-1: kernel start → PID 1 → ready (waiting for etcd-1 to boot: $(s3 "$(at "$c" "etcd answered") - $(at "$c" "node network:")") s) | $(s3 "$(at "$c" "ready role=worker")") s | | | four VMs share two cores |"$'\n'
  # One worker alone against an etcd already up: PID 1 → ready is all ours.
  # The median of $runs boots (by PID 1 → ready), split by its console lines.
  # Baseline, each boot alternated with one of ours (the machine drifts): the
  # same cluster with flannel's default iptables rules.
  "$img" init --out "$out/iptables.toml" >/dev/null
  sed -i 's/^enable_nftables = true$/enable_nftables = false/' "$out/iptables.toml"
  grep -q '^enable_nftables = false$' "$out/iptables.toml"
  "$img" --cluster "$out/iptables.toml" --all --kernel "$kernel" --out "$out/build-iptables" >/dev/null
  own_part() { echo "$(at "$1" "ready role=worker") - $(at "$1" "PID 1 starting")" | bc -l; }
  mkdir -p "$out/ipt"
  for ((i = 0; i < runs; i++)); do
    bash bench/solo-boot.sh "$out/build-all" "$out"
    cp "$out/solo.console" "$out/solo-$i.console"
    echo "$(own_part "$out/solo-$i.console") $i" >>"$out/solo-runs.unsorted"
    bash bench/solo-boot.sh "$out/build-iptables" "$out/ipt"
    own_part "$out/ipt/solo.console" >>"$out/solo-iptables-runs"
  done
  sort -g "$out/solo-runs.unsorted" >"$out/solo-runs"
  t_ipt=$(middle <"$out/solo-iptables-runs")
  c="$out/solo-$(middle 2 <"$out/solo-runs").console"
  p1=$(at "$c" "PID 1 starting"); mods=$(at "$c" "starting the node process"); net=$(at "$c" "node network:")
  etcd=$(at "$c" "etcd answered"); lease=$(at "$c" "acquired lease"); ready=$(at "$c" "ready role=worker")
  pods=$(at "$c" "loaded [0-9]* pod modules")
  # CPU: what PID 1 adds after its first line (the kernel's initcalls run as
  # PID 1 before /init and are in its count) through the pod modules, plus
  # the node process (and the tools it ran) up to ready.
  pid1_cpu=$(echo "($(ms "$c" "loaded [0-9]* pod modules") - $(ms "$c" "PID 1 starting")) / 1000" | bc -l)
  node_cpu=$(echo "$(ms "$c" "ready role=worker") / 1000" | bc -l)
  own=$(echo "$ready - $p1" | bc -l)
  n_boot=$(grep -a -m1 -o "loaded [0-9]* kernel modules" "$c" | tr -dc 0-9)
  n_drivers=$(grep -a -m1 -o "coldplug: loaded [0-9]* drivers" "$c" | tr -dc 0-9)
  n_pods=$(grep -a -m1 -o "loaded [0-9]* pod modules" "$c" | tr -dc 0-9)
  all_own=$(awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $1}' "$out/solo-runs")
  boot_rows+="| worker-1 alone, etcd up beforehand: kernel start → PID 1 | $(s3 "$p1") s | $(printf %.1f "$t_floor") s (whole floor boot) | | kernel + initramfs unpack |"$'\n'
  boot_rows+="| … PID 1 → ready: the agent's own part (wall; median of $runs boots: $all_own s) | $(s3 "$own") s | $(s3 "$t_ipt") s (flannel's default iptables rules, boots alternated) | $(ratio "$own" "$t_ipt") | ≤ 0.3 s |"$'\n'
  boot_rows+="| … PID 1: mounts, $n_boot boot modules and ${n_drivers:-0} drivers by coldplug (finit_module) | $(s3 "$mods - $p1") s | | | |"$'\n'
  boot_rows+="| … node process: start → node network up | $(s3 "$net - $mods") s | | | exec, config, netlink |"$'\n'
  boot_rows+="| … node process: network config from etcd (TLS handshake + one transaction) | $(s3 "$etcd - $net") s | | | |"$'\n'
  boot_rows+="| … node process: lease | $(s3 "$lease - $etcd") s | | | |"$'\n'
  boot_rows+="| … node process: pod-network modules, VXLAN, files, flannel's rules (nftables) → ready | $(s3 "$ready - $lease") s | | | |"$'\n'
  boot_rows+="| … PID 1 in the background: $n_pods pod-network modules, done after PID 1 start | $(s3 "$pods - $p1") s | | | VXLAN, netfilter, bridge |"$'\n'
  boot_rows+="| … CPU time: PID 1 (after its first line, incl. pod modules) + node process | $(s3 "$pid1_cpu") s + $(s3 "$node_cpu") s | | | one vCPU: they share it |"$'\n'
fi

# --- plot --------------------------------------------------------------------
if [ "$(wc -l <"$out/scale.csv")" -gt 2 ]; then
  gnuplot <<EOF
set terminal png size 900,520
set output "$out/scale.png"
set datafile separator ","
set key top left
set logscale xy
set xlabel "nodes (peers)"
set ylabel "seconds"
set title "imgbuild node-agent: lease storm and route programming vs node count"
plot "$out/scale.csv" every ::1 using 1:2 with linespoints title "lease storm (agent)", \
     "" every ::1 using 1:3 with linespoints title "baseline: plain creates", \
     "" every ::1 using 1:4 with linespoints title "programming peers (agent)", \
     "" every ::1 using 1:5 with linespoints title "baseline: ip/bridge -batch"
EOF
fi

# --- report ------------------------------------------------------------------
report="$out/BENCHMARKS.md"
{
  echo "Produced by \`bash bench/run.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -r); QEMU under TCG)."
  echo "Every row has a baseline measured in the same run; the machine is noisy, so read the ratios."
  echo "Rerun: \`bash bench/run.sh\` (as root; \`--quick\` runs each benchmark once at its smallest size)."
  echo
  echo "## Build and size"
  echo
  echo "| benchmark | ours | baseline | ratio | target |"
  echo "| --- | ---: | ---: | ---: | --- |"
  echo "| warm worker build (kernel, modules, CNI, zstd, Ignition, Vagrant box), median of $runs | $t_ours s | mkinitramfs: $t_mkinitramfs s | $(ratio "$t_ours" "$t_mkinitramfs") | ≤ 0.25 |"
  echo "| initramfs step (assemble + cpio + zstd -T2), median of $runs, reproducible: $same | $t_step s | find \\| cpio \\| zstd -T2: $t_cpio s | $(ratio "$t_step" "$t_cpio") | ≤ 1.2 |"
  echo "| all four nodes of the reference cluster | $t_all s | | | |"
  echo "| static agent, stripped, as shipped | $agent_bytes B | | | ≤ 4.5 MiB (4718592 B): not met, see below |"
  printf '%s' "$ign_rows"
  echo
  echo "## Control plane (real etcd 3.4, own network namespace)"
  echo
  echo "| benchmark | N | ours | baseline | ratio | check / target |"
  echo "| --- | ---: | ---: | ---: | ---: | --- |"
  cat "$out/control_plane.md"
  echo
  echo "## First boot natively (no VM)"
  echo
  echo "| benchmark | ours | baseline | ratio | target |"
  echo "| --- | ---: | ---: | ---: | --- |"
  printf '%s' "$native_rows"
  echo
  echo "## Driver sets (etcd-1 on each set's devices, TCG)"
  echo
  cat "$out/driver-sets.md"
  echo
  echo "## kubelet's runtime (Debian's containerd 1.6 and runc, CRI as kubelet calls it)"
  echo
  echo "| benchmark | ours | baseline | ratio | note |"
  echo "| --- | ---: | ---: | ---: | --- |"
  cat "$out/runtime.md"
  echo
  echo "## NetworkPolicy (two workers in network namespaces, real etcd, nftables)"
  echo
  echo "| benchmark | ours | baseline | ratio | note |"
  echo "| --- | ---: | ---: | ---: | --- |"
  cat "$out/netpol.md"
  echo
  echo "## \`imgbuild serve\` under a fleet (loopback, a source address per client)"
  echo
  echo "| benchmark | ours | baseline | ratio | target / check |"
  echo "| --- | ---: | ---: | ---: | --- |"
  cat "$out/serve_fleet.md"
  echo
  echo "## First boot (TCG, 2 cores)"
  echo
  echo "| benchmark | ours | baseline | ratio | target / note |"
  echo "| --- | ---: | ---: | ---: | --- |"
  printf '%s' "$boot_rows"
  printf '%s' "$fr_rows"
} >"$report"
cat "$report"
if ((!quick)); then
  # The tables replace what lies between the markers; the prose stays.
  awk -v report="$report" '
    /<!-- bench:begin -->/ { print; while ((getline line < report) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }' BENCHMARKS.md >"$out/BENCHMARKS.new" && mv "$out/BENCHMARKS.new" BENCHMARKS.md
  [ -f "$out/scale.png" ] && cp "$out/scale.png" bench/scale.png
fi
