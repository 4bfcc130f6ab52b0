#!/usr/bin/env bash
# Runs the fuzz targets of src/fuzz.rs: each for SECONDS (default 60), or only those whose name
# contains FILTER. An input that breaks a target is written to fuzz/crashes/<target>/ and the
# run fails; copy it into fuzz/regressions/<target>/ (with a name saying what it broke) so every
# later test run replays it. The tests (and so CI) run each target on a fixed number of inputs from a fixed
# seed, the same on every machine; this script fuzzes with random seeds.
#
#   scripts/fuzz.sh [SECONDS] [FILTER]
#   RIVULET_FUZZ_SEED=123 scripts/fuzz.sh 10 csv_framing   # repeat a run
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
filter="${2:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rivulet/target}"
RIVULET_FUZZ_SECONDS="$seconds" cargo test --all-features --lib "fuzz::$filter" -- \
  --nocapture --test-threads 1
