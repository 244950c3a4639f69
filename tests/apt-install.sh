#!/usr/bin/env bash
# Installs Debian packages that are missing, for the tests', benchmarks' and
# fuzzers' install scripts. Idempotent: with everything present (and qemu's
# packages of one version) it changes nothing and asks no registry.
#
#   bash tests/apt-install.sh CALLER PKG...
#
# qemu's binary packages must all come from one version of qemu. A machine
# may already carry one of them newer than its apt sources offer (today's
# image ships qemu-utils from bookworm-backports, which Breaks Debian 12's
# qemu-system-common); apt never downgrades by itself, so every installed
# qemu package is pinned to the version apt offers for qemu-system-x86, read
# from apt itself, never written here.
set -euo pipefail

caller=${1:?usage: apt-install.sh CALLER PKG...}
shift

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
candidate() { apt-cache policy "$1" | awk '$1 == "Candidate:" { print $2 }'; }

# Installed packages built from qemu's source, as "NAME VERSION" lines.
qemu_installed() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version} ${source:Package}\n' 2>/dev/null |
    awk '$1 == "ii" && $4 == "qemu" { print $2, $3 }'
}

# A version without its binNMU suffix: qemu's arch-all packages (qemu-system-data)
# are not rebuilt by a binNMU, so "1:7.2+dfsg-7+deb12u18" goes with "...+b3".
upstream() { echo "${1%+b[0-9]*}"; }

# "NAME=VERSION" for every installed qemu package not built from WANT, with the
# version apt offers for that package that is.
qemu_pins() {
  local want name version offered
  want=$(upstream "$1")
  while read -r name version; do
    [ "$(upstream "$version")" = "$want" ] && continue
    offered=$(apt-cache madison "$name" | awk -F' [|] ' '{ print $2 }' |
      while read -r v; do [ "$(upstream "$v")" = "$want" ] && echo "$v"; done | head -n1)
    if [ -z "$offered" ]; then
      echo "$caller: $name $version is installed, and apt offers no $name of qemu $want to match it" >&2
      exit 1
    fi
    echo "$name=$offered"
  done < <(qemu_installed)
}

missing=()
for p in "$@"; do
  installed "$p" || missing+=("$p")
done

wants_qemu=false
for p in "$@"; do
  case $p in qemu-*) wants_qemu=true ;; esac
done

pins=()
if $wants_qemu; then
  # The installed qemu-system-x86 decides when there is one; else apt's candidate
  # (which needs a package list: update first if apt knows no candidate yet).
  want=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  installed qemu-system-x86 || want=""
  if [ -z "$want" ] && [ "$(id -u)" = 0 ]; then
    want=$(candidate qemu-system-x86)
    if [ -z "$want" ] || [ "$want" = "(none)" ]; then
      apt-get update -qq
      want=$(candidate qemu-system-x86)
    fi
  fi
  if [ -n "$want" ] && [ "$want" != "(none)" ]; then
    pinned=$(qemu_pins "$want")
    [ -z "$pinned" ] || mapfile -t pins <<<"$pinned"
  fi
fi

if ((${#missing[@]} + ${#pins[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "$caller: need root to install: ${missing[*]} ${pins[*]}" >&2
    exit 1
  fi
  echo "$caller: installing: ${missing[*]} ${pins[*]}"
  apt-get update -qq
  # The pins name their package with a version: listing a pinned package
  # again without one would ask apt for two different things.
  names=()
  for p in "${missing[@]}"; do
    pinned=false
    for q in "${pins[@]}"; do [ "${q%%=*}" = "$p" ] && pinned=true; done
    $pinned || names+=("$p")
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${names[@]}" "${pins[@]}" >/dev/null
fi

# Proof that qemu's packages agree, so a mismatch fails here and not in a test.
if $wants_qemu; then
  versions=$(qemu_installed | while read -r _ v; do upstream "$v"; done | sort -u)
  if [ "$(echo "$versions" | wc -l)" != 1 ]; then
    echo "$caller: qemu packages of different versions are installed:" >&2
    qemu_installed >&2
    exit 1
  fi
fi
