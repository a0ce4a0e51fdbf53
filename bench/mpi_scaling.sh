#!/usr/bin/env bash
# bench/mpi_scaling.sh — data-parallel scaling on one machine (issue 16).
#
# Trains the same run as 1 process with T threads and as `mpirun -np R` with T/R threads
# each (same global batch, same --micro-batches R, so the same adapter bytes), and prints
# tokens/s, the ratio, and the time per step spent waiting for the gradient exchange
# (summary.json: tokens_per_s, comm_seconds, steps). Only meaningful on an idle machine.
#
#   bench/mpi_scaling.sh MODEL_ARGS... [-- EXTRA_FLAGS...]
#   env: BUILD (default build), RANKS (2), THREADS (2), STEPS (40)
#   e.g. bench/mpi_scaling.sh --model $D/models/stories260K/stories260K.bin \
#          --tokenizer $D/models/stories260K/tok512.bin --data $D/alpaca/alpaca_train.json
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
ranks=${RANKS:-2}
threads=${THREADS:-2}
steps=${STEPS:-40}
bin="$build/examples/gsq-finetune"
[[ -x "$bin" ]] || { echo "mpi_scaling.sh: $bin not found" >&2; exit 2; }
command -v mpirun > /dev/null || { echo "mpi_scaling.sh: mpirun not found (apt install openmpi-bin)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--precision w8a8g8 --rank 16 --batch 4 --seq-len 256 --steps "$steps" --micro-batches "$ranks" "$@")

report() {  # report <label> <dir>
  python3 - "$1" "$2/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
steps = s.get("steps_done") or s.get("steps")
print(f"{sys.argv[1]:<28} {s['tokens_per_s']:>10.0f} tok/s   exchange wait {1e3 * s['comm_seconds'] / steps:7.2f} ms/step")
PY
}
"$bin" "${common[@]}" --threads "$threads" --out "$out/one" > /dev/null
report "1 process x $threads threads" "$out/one"
mpirun --allow-run-as-root --oversubscribe -np "$ranks" "$bin" "${common[@]}" \
  --threads $(( threads / ranks > 0 ? threads / ranks : 1 )) --out "$out/dp" > /dev/null
report "$ranks ranks x $(( threads / ranks > 0 ? threads / ranks : 1 )) threads" "$out/dp"
cmp -s "$out/one/adapter/adapter_model.safetensors" "$out/dp/adapter/adapter_model.safetensors" &&
  echo "adapters: identical bytes" || echo "adapters: DIFFER"
