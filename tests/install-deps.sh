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
  curl                              # etcd's JSON gateway, called as an outsider would
  cpio zstd                         # checking initramfs images with the usual tools
  graphviz                          # docs/architecture.svg is drawn from docs/architecture.dot
  vagrant vagrant-libvirt           # `vagrant box add`, `vagrant up` of the reference cluster
  libvirt-daemon-system dnsmasq-base  # libvirtd (started by tests/libvirt.sh) and its DHCP
  genisoimage dosfstools mtools     # OpenStack config drives (ISO 9660 and FAT) built in tests
  containerd runc                   # kubelet's runtime: the agent runs it; tests drive its CRI
  protobuf-compiler                 # protoc: the CRI client the tests use is generated at build time
)

bash "$(dirname "$0")/apt-install.sh" tests/install-deps.sh "${packages[@]}"
