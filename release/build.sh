#!/usr/bin/env bash
# Builds the release tarball: both static binaries, the man page and shell
# completions, with SHA256SUMS inside and beside it. Reproducible: the same
# commit, toolchain and checkout path give the same bytes (file order, owners
# and mtimes are fixed; mtimes are the commit's time).
#   bash release/build.sh [OUT_DIR]      (default target/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/dist}
cargo build --release --locked -q -p imgbuild -p node-agent
bin=target/x86_64-unknown-linux-gnu/release
version=$("$bin/imgbuild" --version | awk '{print $2}')
name="imgbuild-$version-x86_64-linux"
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/bin" "$root/man/man1" "$root/completions"
install -m 0755 "$bin/imgbuild" "$bin/node-agent" "$root/bin/"
"$bin/imgbuild" man > "$root/man/man1/imgbuild.1"
"$bin/imgbuild" completions bash > "$root/completions/imgbuild.bash"
"$bin/imgbuild" completions zsh > "$root/completions/_imgbuild"
"$bin/imgbuild" completions fish > "$root/completions/imgbuild.fish"
cp LICENSE README.md CONTRACT.md "$root/"
chmod 0644 "$root"/man/man1/* "$root"/completions/* "$root"/*.md "$root/LICENSE"
(cd "$root" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

mkdir -p "$out"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode='u+rwX,go+rX,go-w' \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$stage" -cf - "$name" | gzip -9n > "$out/$name.tar.gz.tmp"
mv "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "release: $out/$name.tar.gz"
cat "$out/$name.tar.gz.sha256"
