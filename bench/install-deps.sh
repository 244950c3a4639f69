#!/usr/bin/env bash
# What the benchmarks measure against, beyond the tests' packages: Debian's
# mkinitramfs with the cloud kernel installed (the baseline builds for it),
# gnuplot for the plot, bc for the arithmetic, jq to read a config, nc to
# forward the solo boot's etcd connections, qemu-user to time code under
# TCG without a VM.
set -euo pipefail
packages=(initramfs-tools linux-image-cloud-amd64 gnuplot-nox bc jq netcat-openbsd qemu-user)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { echo "bench/install-deps.sh: need root to install: ${missing[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
