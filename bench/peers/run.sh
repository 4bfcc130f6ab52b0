#!/usr/bin/env bash
# The peer benchmarks: rivulet beside DataFusion, DuckDB and Apache Flink on one generated input,
# each query's outputs checked to agree before a time is accepted.
#
#   bench/peers/run.sh                      # 2 M records, every engine, best of 3, one core
#                                           # (and rivulet_2cores: rivulet on two, where there are)
#   bench/peers/run.sh --records 200000 --engines rivulet,datafusion,duckdb
#   bench/peers/run.sh --tiny               # the harness's tests and the agreement on 20,000 records
#   bench/peers/run.sh --report docs        # … and regenerate docs/benchmarks.md with its charts
#
# The peers are installed on demand into a virtualenv ($RIVULET_CACHE/venv-peers): DataFusion and
# DuckDB from PyPI, Apache Flink from PyPI (`apache-flink`, with the Java on PATH; skipped with a
# message when there is no Java). Results: bench/results/results.json and results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RIVULET_CACHE:-$HOME/.cache/rivulet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
venv="$cache/venv-peers"

# rivulet on two cores beside its one core, where there are two.
engines="rivulet,datafusion,duckdb,flink"
[ "$(nproc)" -ge 2 ] && engines="rivulet,rivulet_2cores,datafusion,duckdb,flink"
args=() profile=release tiny=
while [ $# -gt 0 ]; do
  case "$1" in
    --engines) engines="$2"; shift 2 ;;
    --tiny) tiny=1; args+=(--records 20000 --runs 1 --out "${TMPDIR:-/tmp}/rivulet-peers-tiny"); shift ;;
    --debug) profile=debug; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [[ ",$engines," == *",flink,"* ]] && ! command -v java >/dev/null; then
  if [ -n "${CI:-}" ]; then
    echo "run.sh: no java on PATH, and CI runs every peer" >&2
    exit 1
  fi
  echo "run.sh: no java on PATH: Apache Flink is skipped" >&2
  engines=$(echo "$engines" | sed 's/,flink//; s/flink,//')
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
want=(datafusion==55.* duckdb matplotlib)
[[ ",$engines," == *",flink,"* ]] && want+=(apache-flink)
"$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"

if [ "$profile" = release ]; then
  cargo build --quiet --release --all-features --bin rivulet
else
  cargo build --quiet --all-features --bin rivulet
fi
if [ -n "$tiny" ]; then
  (cd bench/peers && "$venv/bin/python" -m unittest --quiet test_harness)
fi
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
exec "${pin[@]}" "$venv/bin/python" bench/peers/harness.py \
  --rivulet "$CARGO_TARGET_DIR/$profile/rivulet" --engines "$engines" "${args[@]}"
