#!/usr/bin/env bash
# Runs every fuzz target for a fixed budget with cargo-fuzz (libFuzzer),
# keeping what it learns in fuzz/corpus/TARGET and any crash in
# fuzz/artifacts/TARGET (a crash fails the run).
#
#   bash fuzz/run.sh            60 s per target
#   bash fuzz/run.sh --quick    10 s per target (CI)
#   FUZZ_SECONDS=600 bash fuzz/run.sh
#
# cargo-fuzz needs nightly-only compiler flags; the one stable toolchain
# here accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-60}
# Full runs: optimized, with overflow checks and AddressSanitizer. Quick runs
# (CI) only prove every target still builds and runs: a debug build without
# a sanitizer compiles in a fraction of the time.
flags=(-O -a)
if [ "${1:-}" = "--quick" ]; then
  secs=10
  flags=(--dev -s none)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build "${flags[@]}" 2>&1 | tail -1
for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "fuzz: $t for ${secs}s"
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::new_units_added)|ERROR|panicked|SUMMARY" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t crashed; inputs in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: no crashes"
