#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test
# in the workspace against the real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
cargo test --workspace --locked
