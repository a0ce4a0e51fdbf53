#!/usr/bin/env bash
# bench/contention.sh — training throughput when another process wants a core.
#
# Issue 12: with one busy loop on a 2-core machine, OpenMP's spinning workers cut a
# W8A8G8 run from 4,623 to 120 tokens/s. This runs one bench_model benchmark at
# --threads 1, 2 and the default (GSQ_NUM_THREADS unset), first idle, then next to one
# busy process (`sh -c 'while :; do :; done'`, started and stopped here), and prints
# tokens/s (median of the repetitions) with the issue's two targets:
#   busy, default threads  >= 0.9  x  the best of busy 1 / busy 2 threads
#   busy, default threads  >= 0.45 x  idle, default threads
# Only meaningful on an otherwise idle machine.
#
#   bench/contention.sh [--build DIR] [--filter REGEX] [--reps N] [--busy N]
#     --build   build directory holding bench/bench_model (default: build)
#     --filter  benchmark to run (default: ^train_step/stories260K/int8_linear/)
#     --reps    repetitions per configuration (default: 3)
#     --busy    number of busy processes for the loaded runs (default: 1)
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
filter='^train_step/stories260K/int8_linear/'
reps=3
busy_count=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --busy) busy_count=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "contention.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bench="$build/bench/bench_model"
[[ -x "$bench" ]] || { echo "contention.sh: $bench not found (cmake --build $build --target bench_model)" >&2; exit 2; }

busy_pids=()
stop_busy() {
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${busy_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  busy_pids=()
}
trap stop_busy EXIT

# tokens/s of one configuration: median over the repetitions.
run() {  # run <threads|default>
  local out status=0
  out=$(mktemp)
  if [[ "$1" == default ]]; then
    env -u GSQ_NUM_THREADS "$bench" --benchmark_filter="$filter" --benchmark_repetitions="$reps" \
      --benchmark_format=json > "$out" 2>/dev/null || status=$?
  else
    GSQ_NUM_THREADS=$1 "$bench" --benchmark_filter="$filter" --benchmark_repetitions="$reps" \
      --benchmark_format=json > "$out" 2>/dev/null || status=$?
  fi
  if [[ $status -ne 0 ]]; then
    echo "contention.sh: bench_model failed (does --filter '$filter' match? see --benchmark_list_tests)" >&2
    rm -f "$out"
    return 1
  fi
  python3 - "$out" <<'EOF' || status=$?
import json, statistics, sys
runs = [b for b in json.load(open(sys.argv[1]))["benchmarks"] if b.get("run_type") == "iteration"]
if not runs:
    sys.exit("contention.sh: the filter matched no benchmark")
print(f'{statistics.median(b["tokens_per_s"] for b in runs):.0f}')
EOF
  rm -f "$out"
  return $status
}

declare -A rate
for load in idle busy; do
  if [[ $load == busy ]]; then
    for ((i = 0; i < busy_count; ++i)); do
      sh -c 'while :; do :; done' &
      busy_pids+=($!)
    done
  fi
  for t in 1 2 default; do
    rate[$load,$t]=$(run "$t")
    echo "$load  threads=$t  tokens/s=${rate[$load,$t]}"
  done
  stop_busy
done

python3 - "${rate[idle,1]}" "${rate[idle,2]}" "${rate[idle,default]}" \
  "${rate[busy,1]}" "${rate[busy,2]}" "${rate[busy,default]}" "$filter" "$busy_count" <<'EOF'
import sys
i1, i2, idf, b1, b2, bdf = map(float, sys.argv[1:7])
print(f"\n{sys.argv[7]}, tokens/s (median); busy = {sys.argv[8]} busy-loop process(es)")
print(f"{'':8}{'1 thread':>10}{'2 threads':>11}{'default':>10}")
print(f"{'idle':8}{i1:10.0f}{i2:11.0f}{idf:10.0f}")
print(f"{'busy':8}{b1:10.0f}{b2:11.0f}{bdf:10.0f}")
best = max(b1, b2)
r1, r2 = bdf / best, bdf / idf
print(f"busy default / best busy 1-2 threads = {r1:.2f}  (target >= 0.90: {'met' if r1 >= 0.9 else 'NOT met'})")
print(f"busy default / idle default          = {r2:.2f}  (target >= 0.45: {'met' if r2 >= 0.45 else 'NOT met'})")
EOF
