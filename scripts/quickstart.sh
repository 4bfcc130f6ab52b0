#!/usr/bin/env bash
# Runs the quickstart: generated stock ticks → SQL → standard output and a local file.
# No AWS account, no network. The first run builds rivulet (see the README for how long).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RIVULET_CACHE:-$HOME/.cache/rivulet}/target}"
cargo run --quiet --bin rivulet -- run examples/quickstart.toml "$@"
echo "output also written to examples/quickstart-output/tech-movers.ndjson" >&2
