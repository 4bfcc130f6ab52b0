#!/usr/bin/env bash
# Runs rivulet's criterion benches, and saves or compares against a named baseline, so that a
# regression shows before a change lands:
#
#   scripts/bench.sh                         # every bench, one core
#   scripts/bench.sh --save main             # … and keep the figures as baseline "main"
#   scripts/bench.sh --compare main windows  # the windows bench against baseline "main"
#   scripts/bench.sh --compare main --fail-above 5   # exit 1 when any bench is > 5 % slower
#
# The usual loop: on the commit before a change, `--save before`; on the change, `--compare
# before`. The table at the end lists every benchmark measured in this run with its change in
# mean time against the baseline (criterion's own estimates in target/criterion/*/change/).
# Benches run pinned to one core (taskset -c 0) when taskset is there, as the README's figures
# are. Extra criterion options go after `--`, e.g. `-- --measurement-time 3`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="" baseline="" fail_above="" benches=() criterion_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --save) mode=save; baseline="$2"; shift 2 ;;
    --compare) mode=compare; baseline="$2"; shift 2 ;;
    --fail-above) fail_above="$2"; shift 2 ;;
    --) shift; criterion_args=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    *) benches+=("$1"); shift ;;
  esac
done
if [ -n "$fail_above" ] && [ "$mode" != compare ]; then
  echo "bench.sh: --fail-above needs --compare NAME" >&2
  exit 2
fi

cache="${RIVULET_CACHE:-$HOME/.cache/rivulet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

if [ ${#benches[@]} -eq 0 ]; then
  benches=($(sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"/\1/p}' Cargo.toml))
fi
if [[ " ${benches[*]} " == *" wasm_udf "* ]] && ! ls udfs/build/*.wasm >/dev/null 2>&1; then
  scripts/build-udfs.sh
fi

case "$mode" in
  save) criterion_args+=(--save-baseline "$baseline") ;;
  compare) criterion_args+=(--baseline "$baseline") ;;
esac
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

bench_flags=()
for b in "${benches[@]}"; do bench_flags+=(--bench "$b"); done
cargo bench --all-features --no-run "${bench_flags[@]}"
started=$(date +%s)
for b in "${benches[@]}"; do
  printf '\n==> %s\n' "$b"
  "${pin[@]}" cargo bench --quiet --all-features --bench "$b" -- "${criterion_args[@]}"
done

[ "$mode" = compare ] || exit 0
# Every benchmark whose change estimates were written during this run.
python3 - "$CARGO_TARGET_DIR/criterion" "$started" "$baseline" "${fail_above:-}" <<'PY'
import json, os, sys
root, started, baseline, fail_above = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "change" or "estimates.json" not in files:
        continue
    path = os.path.join(dirpath, "estimates.json")
    if os.path.getmtime(path) < started:
        continue
    name = os.path.relpath(os.path.dirname(dirpath), root)
    with open(path) as f:
        mean = json.load(f)["mean"]
    lo, hi = mean["confidence_interval"]["lower_bound"], mean["confidence_interval"]["upper_bound"]
    rows.append((name, mean["point_estimate"] * 100, lo * 100, hi * 100))
if not rows:
    sys.exit(f"no change estimates written: is there a baseline named {baseline!r}?")
print(f"\n| benchmark | mean time vs {baseline} | 95 % interval |\n| --- | --- | --- |")
for name, point, lo, hi in sorted(rows):
    print(f"| `{name}` | {point:+.1f} % | {lo:+.1f} % … {hi:+.1f} % |")
if fail_above:
    worse = [r for r in rows if r[2] > float(fail_above)]
    for name, point, lo, _ in worse:
        print(f"slower: {name}: {point:+.1f} % (at least {lo:+.1f} %)", file=sys.stderr)
    sys.exit(1 if worse else 0)
PY
