#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test
# in the workspace against the real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
# Every test binary runs even after a failure, so one run shows them all.
cargo test --workspace --locked --no-fail-fast
