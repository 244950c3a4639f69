#!/usr/bin/env bash
# Installs the real components the tests run against, from Debian's
# packages. Idempotent: packages already present are not touched.
set -euo pipefail

packages=(
  etcd-server etcd-client           # the real datastore (etcd 3.4, v3 API)
  containernetworking-plugins       # the real CNI plugins in /usr/lib/cni
  ignition                          # ignition-validate and the real Ignition binary
  qemu-system-x86 ovmf ipxe-qemu    # booting images
  qemu-utils                        # qemu-img: qcow2 disks
  iproute2 iputils-ping nftables iptables kmod
  cpio zstd                         # checking initramfs images with the usual tools
  vagrant vagrant-libvirt           # `vagrant box add`, `vagrant up` of the reference cluster
  libvirt-daemon-system dnsmasq-base  # libvirtd (started by tests/libvirt.sh) and its DHCP
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/install-deps.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
