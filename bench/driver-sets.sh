#!/usr/bin/env bash
# Driver sets: per set, the etcd node's image size and its boot under TCG
# (PID 1 -> `ready`, from the console's uptime stamps) on the devices the
# set drives, against the virtio set in the same run:
#   virtio    virtio-net, virtio-blk          (cloud kernel)
#   cloud     vmxnet3, virtio-blk             (cloud kernel)
#   hardware  Intel e1000e, NVMe              (Debian's generic kernel)
#   bash bench/driver-sets.sh OUT_DIR IMGBUILD AGENT RUNS
# prints a Markdown table.
set -euo pipefail
out=$1; img=$2; agent=$3; runs=$4
dir="$out/driver-sets"; rm -rf "$dir"; mkdir -p "$dir"
mac=52:54:00:44:53:ef
nic_of() { case $1 in virtio) echo virtio-net-pci ;; cloud) echo vmxnet3 ;; hardware) echo e1000e ;; esac; }
disk_of() {
  case $1 in
    hardware) echo "-drive file=$2,if=none,id=d,format=raw -device nvme,drive=d,serial=d" ;;
    *) echo "-drive file=$2,if=virtio,format=raw" ;;
  esac
}
# The stamp (seconds since boot) of the console line matching $2 in file $1.
stamp() { grep -a -m1 "$2" "$1" | sed -n 's/.*uptime=\([0-9.]*\)s.*/\1/p'; }
middle() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

rows=""
for set in virtio cloud hardware; do
  sed "s/^\[artifacts\]/[images]\ndrivers = \"$set\"\n\n[artifacts]/" "$(dirname "$0")/../builder/src/cluster/default.toml" >"$dir/$set.toml"
  IMGBUILD_AGENT=$agent "$img" --cluster "$dir/$set.toml" --node etcd-1 --only image --pki "$dir/pki" --out "$dir/$set" >/dev/null
  node="$dir/$set/etcd-1"
  initrd=$(stat -c %s "$node/initrd.img"); vmlinuz=$(stat -c %s "$node/vmlinuz")
  times=()
  for ((i = 0; i < runs; i++)); do
    rm -f "$dir/data.img"; truncate -s 256M "$dir/data.img"
    # shellcheck disable=SC2046
    timeout 180 qemu-system-x86_64 -accel tcg -m 768 -nographic -no-reboot -kernel "$node/vmlinuz" -initrd "$node/initrd.img" \
      -append "$(cat "$node/cmdline") pci=noacpi,nomsi" -netdev user,id=n,restrict=on -device "$(nic_of $set),netdev=n,mac=$mac" \
      $(disk_of $set "$dir/data.img") </dev/null >"$dir/$set.console" 2>&1 &
    q=$!
    for _ in $(seq 1 170); do grep -aqs "node-agent: ready role=etcd" "$dir/$set.console" && break; sleep 1; done
    kill $q 2>/dev/null || true; wait $q 2>/dev/null || true
    p=$(stamp "$dir/$set.console" "PID 1 starting"); r=$(stamp "$dir/$set.console" "node-agent: ready role=etcd")
    [ -n "$p" ] && [ -n "$r" ] || { echo "driver-sets: $set did not become ready" >&2; tail -20 "$dir/$set.console" >&2; exit 1; }
    times+=("$(echo "$r - $p" | bc -l)")
  done
  t=$(printf '%s\n' "${times[@]}" | middle)
  eval "size_$set=$((initrd + vmlinuz)) t_$set=$t"
  kernel=$(grep -a -m1 "node-agent: kernel" "$dir/$set.console" | awk '{print $3}' | tr -d '\r')
  rows+="$set $initrd $vmlinuz $t $kernel"$'\n'
done
echo "| set (etcd-1; NIC, disk) | kernel | initrd | vmlinuz | image vs virtio | PID 1 → ready, median of $runs | vs virtio |"
echo "|---|---|---|---|---|---|---|"
while read -r set initrd vmlinuz t kernel; do
  [ -n "$set" ] || continue
  size=$((initrd + vmlinuz))
  printf '| %s (%s) | %s | %.1f MB | %.1f MB | %.2f× | %.2f s | %.2f× |\n' "$set" "$(nic_of "$set")" "$kernel" \
    "$(echo "$initrd / 1000000" | bc -l)" "$(echo "$vmlinuz / 1000000" | bc -l)" "$(echo "$size / $size_virtio" | bc -l)" \
    "$t" "$(echo "$t / $t_virtio" | bc -l)"
done <<<"$rows"
