#!/usr/bin/env bash
# What the benchmarks measure against, beyond the tests' packages: Debian's
# mkinitramfs with the cloud kernel installed (the baseline builds for it),
# gnuplot for the plot, bc for the arithmetic, jq to read a config, nc to
# forward the solo boot's etcd connections, qemu-user to time code under
# TCG without a VM, nginx as the baseline for `imgbuild serve` under a fleet.
set -euo pipefail
packages=(initramfs-tools linux-image-cloud-amd64 gnuplot-nox bc jq netcat-openbsd qemu-user nginx-light)
bash "$(dirname "$0")/../tests/apt-install.sh" bench/install-deps.sh "${packages[@]}"
