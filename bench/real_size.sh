#!/usr/bin/env bash
# bench/real_size.sh — fine-tune a real model shape on this machine (issue 14's table).
#
# For each named shape: writes a random-weight checkpoint (gsq-make-model: sharded BF16
# safetensors), reads the shards once with a cold page cache (`cat` to /dev/null: the
# disk's time), then runs gsq-finetune for STEPS steps of one 512-token sequence, LoRA
# r16 on all projections, W8A8G8 over an NF4 base, plus EXTRA flags, under
# `/usr/bin/time -v`, and prints one table row: load time (model built, from
# summary.json) against the cat time, peak RSS of the whole run (load, training, export),
# seconds per step and tokens/s. The checkpoint and the run are deleted afterwards.
# Needs root for the cold cache (/proc/sys/vm/drop_caches), else the cat time is warm.
# Disk: the shape's BF16 size twice (checkpoint + merged export): 13B needs 52 GB.
#
#   bench/real_size.sh [SHAPE...]     (default: tinyllama-1.1b llama2-7b llama2-13b llama3-8b)
#   env: BUILD (build), WORK (/tmp/gsq-real-size), STEPS (2),
#        EXTRA ("--recompute-blocks --double-quant"; EXTRA= for none), DATA (../shared/data/text/tinystories_val.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
work=${WORK:-/tmp/gsq-real-size}
steps=${STEPS:-2}
extra=${EXTRA---recompute-blocks --double-quant}
data=${DATA:-../shared/data/text/tinystories_val.txt}
shapes=("$@")
[[ ${#shapes[@]} -gt 0 ]] || shapes=(tinyllama-1.1b llama2-7b llama2-13b llama3-8b)
for tool in gsq-make-model gsq-finetune; do
  [[ -x "$build/examples/$tool" ]] || { echo "real_size.sh: $build/examples/$tool not found" >&2; exit 2; }
done
[[ -f "$data" ]] || { echo "real_size.sh: no data file $data (set DATA)" >&2; exit 2; }
mkdir -p "$work"
trap 'rm -rf "$work/model" "$work/run"' EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

printf '| shape | checkpoint | load + NF4 (cat) | peak RSS | s/step | tokens/s |\n|---|---:|---:|---:|---:|---:|\n'
for shape in "${shapes[@]}"; do
  rm -rf "$work/model" "$work/run"
  "$build/examples/gsq-make-model" --shape "$shape" --out "$work/model" > "$work/$shape.make.log"
  bytes=$(du -sb "$work/model" | cut -f1)
  drop_caches
  cat_s=$( { /usr/bin/time -f %e cat "$work/model"/*.safetensors > /dev/null; } 2>&1 )
  drop_caches
  # shellcheck disable=SC2086
  /usr/bin/time -v "$build/examples/gsq-finetune" --model "$work/model" --data "$data" --batch 1 --seq-len 512 \
    --steps "$steps" --rank 16 --precision w8a8g8 --log-every 1 $extra --out "$work/run" \
    > "$work/$shape.run.log" 2>&1 || { echo "real_size.sh: $shape failed, see $work/$shape.run.log" >&2; exit 1; }
  python3 - "$shape" "$bytes" "$cat_s" "$work/run/summary.json" "$work/$shape.run.log" <<'PY'
import json, re, sys
shape, size, cat_s, summary, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = json.load(open(summary))
rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(log).read()).group(1))
steps = s["steps_done"]
print(f"| {shape} | {size / 1e9:.2f} GB | {s['load_seconds']:.1f} s ({cat_s:.1f} s, {s['load_seconds'] / cat_s:.2f}x) "
      f"| {rss_kib / 2**20:.2f} GiB | {s['train_seconds'] / steps:.1f} | {s['tokens_per_s']:.1f} |")
PY
done
