#!/usr/bin/env bash
# Builds the udfs/ workspace for wasm32-unknown-unknown.
#
# Where rustup has the wasm32 target installed, this is a plain `cargo build --target`. Where it
# does not (and `rustup target add` cannot download it), it falls back to Debian's rustc-web and
# rust-web-src packages and builds the standard library from source with -Zbuild-std.
#
#   scripts/build-udfs.sh               build (release); the modules are copied to udfs/build/
#   scripts/build-udfs.sh --has-crates  exit 0 when udfs/ has member crates, 1 otherwise
set -euo pipefail
cd "$(dirname "$0")/../udfs"

members=$(sed -n '/^members/,/\]/p' Cargo.toml | grep -o '"[^"]*"' || true)
if [ "${1:-}" = "--has-crates" ]; then
  [ -n "$members" ]
  exit
fi
if [ -z "$members" ]; then
  echo "udfs/: no member crates yet; nothing to build"
  exit 0
fi

target=wasm32-unknown-unknown
# The guest build has its own target directory (the host's may be shared with another compiler).
export CARGO_TARGET_DIR="${RIVULET_CACHE:-$HOME/.cache/rivulet}/udfs-target"

copy_out() {
  mkdir -p build
  cp "$CARGO_TARGET_DIR/$target/release/"*.wasm build/
  echo "WASM modules in udfs/build/: $(cd build && echo *.wasm)"
}

libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
if [ -n "$libdir" ] && [ -d "$libdir" ]; then
  echo "building udfs/ with the rustup-installed $target target"
  cargo build --release --target "$target"
  copy_out
  exit 0
fi

echo "rustup has no $target standard library here; using Debian's rustc-web with -Zbuild-std"
if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust ] || ! command -v wasm-ld >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing rustc-web, cargo-web, rust-web-src and lld needs root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld
fi
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
  /usr/bin/cargo build --release --target "$target" -Zbuild-std=std,panic_abort
copy_out
