#!/usr/bin/env bash
# kubelet's runtime in the worker image: worker-1's initramfs size and its
# boot under TCG (alone, etcd up beforehand: bench/solo-boot.sh) with
# containerd (the default) against the same cluster with
# `[images] containerd = false`, boots alternated in the same run:
# PID 1 → `ready` (the pod network), and PID 1 → `containerd ready`
# (socket up, pause image imported).
#   bash bench/runtime.sh OUT_DIR IMGBUILD AGENT KERNEL RUNS   prints Markdown rows
set -euo pipefail
out=$1; img=$2; agent=$3; kernel=$4; runs=$5
dir="$out/runtime"; rm -rf "$dir"; mkdir -p "$dir/with" "$dir/without"
here=$(dirname "$0")
sed 's/^\[artifacts\]/[images]\ncontainerd = false\n\n[artifacts]/' "$here/../builder/src/cluster/default.toml" >"$dir/without.toml"
grep -q '^containerd = false$' "$dir/without.toml"
IMGBUILD_AGENT=$agent "$img" --all --only image,ignition --kernel "$kernel" --pki "$dir/pki" --out "$dir/build-with" >/dev/null
IMGBUILD_AGENT=$agent "$img" --cluster "$dir/without.toml" --all --only image,ignition --kernel "$kernel" --pki "$dir/pki" \
  --out "$dir/build-without" >/dev/null
at() { grep -a -m1 "$2" "$1" | sed -n 's/.*uptime=\([0-9.]*\)s.*/\1/p'; }
middle() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for ((i = 0; i < runs; i++)); do
  bash "$here/solo-boot.sh" "$dir/build-with" "$dir/with" "containerd ready"
  c="$dir/with/solo.console"
  p=$(at "$c" "PID 1 starting"); r=$(at "$c" "ready role=worker"); k=$(at "$c" "containerd ready")
  [ -n "$p" ] && [ -n "$r" ] && [ -n "$k" ] || { echo "runtime: no containerd ready line" >&2; tail -30 "$c" >&2; exit 1; }
  echo "$r - $p" | bc -l >>"$dir/with-ready"
  echo "$k - $p" | bc -l >>"$dir/with-runtime"
  bash "$here/solo-boot.sh" "$dir/build-without" "$dir/without"
  c="$dir/without/solo.console"
  echo "$(at "$c" "ready role=worker") - $(at "$c" "PID 1 starting")" | bc -l >>"$dir/without-ready"
done
s_with=$(stat -c %s "$dir/build-with/worker-1/initrd.img"); s_without=$(stat -c %s "$dir/build-without/worker-1/initrd.img")
r_with=$(middle <"$dir/with-ready"); r_without=$(middle <"$dir/without-ready"); k_with=$(middle <"$dir/with-runtime")
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
printf '| worker-1 initramfs (zstd) | %.1f MB | %.1f MB (containerd = false) | %s | containerd, its shim, ctr, runc, libseccomp |\n' \
  "$(echo "$s_with / 1000000" | bc -l)" "$(echo "$s_without / 1000000" | bc -l)" "$(ratio "$s_with" "$s_without")"
printf '| worker-1 alone: PID 1 → ready (pod network), median of %s | %.2f s | %.2f s (containerd = false) | %s | containerd starts after ready |\n' \
  "$runs" "$r_with" "$r_without" "$(ratio "$r_with" "$r_without")"
printf '| worker-1 alone: PID 1 → containerd ready (socket, pause image imported), median of %s | %.2f s | %.2f s (ready without it) | %s | |\n' \
  "$runs" "$k_with" "$r_without" "$(ratio "$k_with" "$r_without")"
