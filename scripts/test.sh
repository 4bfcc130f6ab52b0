#!/usr/bin/env bash
# Runs rivulet's whole test suite, installing what the tests need when it is missing:
#   - moto (the AWS API emulator) in a virtualenv, for the integration tests;
#   - the wasm32 toolchain, once udfs/ holds crates to build.
# Then: cargo fmt --check, cargo clippy -D warnings, cargo test --all-features.
#
# Builds go to a cargo target directory outside the clone ($RIVULET_CACHE/target, default
# ~/.cache/rivulet/target) so that a fresh clone does not rebuild DataFusion from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${RIVULET_CACHE:-$HOME/.cache/rivulet}"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

step() { printf '\n==> %s\n' "$*"; }

moto_venv="$cache/venv-moto"
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  step "installing moto into $moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
export RIVULET_MOTO_SERVER="$moto_venv/bin/moto_server"

if scripts/build-udfs.sh --has-crates; then
  step "building the WASM UDFs in udfs/"
  scripts/build-udfs.sh
fi

if scripts/build-udfs.sh --has-crates; then
  step "cargo test in udfs/ (the SDK and the example functions, natively)"
  (cd udfs && CARGO_TARGET_DIR="$cache/udfs-native" cargo test --quiet)
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo test --all-features"
cargo test --all-features

step "bench/peers/run.sh --tiny (the peers' outputs agree with rivulet's on a small input)"
bench/peers/run.sh --tiny --debug

step "cargo run --example quickstart (the library quickstart checks its own result)"
cargo run --quiet --all-features --example quickstart

step "cargo run --example windows (event-time windows; checks its own result)"
cargo run --quiet --all-features --example windows
