#!/usr/bin/env bash
# The fidelity study of the README: stories260K on the Alpaca train split, LoRA r8 on all
# seven projections, 600 steps, seed 0, held-out perplexity on alpaca_dev.json.
#
#   scripts/fidelity.sh [BUILD_DIR] [OUT_DIR]      (defaults: build, build/fidelity)
#
# Runs gsq-finetune once per row and prints a Markdown table from the runs' summary.json
# (quality and gsq's memory accounting; speed is bench_model's job):
#   - LoRA, FP32 arithmetic over the FP32 base (the reference), with --ptq-bits 4,3: the
#     merged weights rounded to 4 and 3 bits afterwards (the baseline L4Q must beat)
#   - LoRA, FP32 arithmetic over an NF4 base (QLoRA): isolates what the base storage costs
#   - LoRA, W8A8G8 and W6A6G6 GSE-INT arithmetic over the NF4 base (GSQ-Tuning: the
#     projections and adapters integer, attention and the classifier FP32 — the drivers'
#     default), the same with BF16 attention and classifier products (--attention-precision
#     bf16 --classifier-precision bf16), with every product integer (--attention-precision
#     same --int-classifier), and with only one of the two widened (W8A8G8)
#   - L4Q at 4 and 3 bits (group 128): one quantized merged model
# Environment: GSQ_DATA_DIR (default ../shared/data), STEPS (600), THREADS (0 = all),
# RUNS (a space-separated subset of the run names below; the table shows the runs whose
# summary.json exists in OUT_DIR, so a study can be completed in several sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-$build/fidelity}
data=${GSQ_DATA_DIR:-../shared/data}
steps=${STEPS:-600}
threads=${THREADS:-0}
finetune=$build/examples/gsq-finetune
[ -x "$finetune" ] || { echo "fidelity: $finetune not built (run scripts/bootstrap.sh)" >&2; exit 1; }
[ -f "$data/models/stories260K/stories260K.bin" ] || { echo "fidelity: no stories260K under $data" >&2; exit 1; }

common=(--model "$data/models/stories260K/stories260K.bin" --data "$data/alpaca/alpaca_train.json"
        --eval-data "$data/alpaca/alpaca_dev.json" --steps "$steps" --batch 8 --seq-len 256 --rank 8
        --alpha 16 --seed 0 --threads "$threads" --quant-group 128 --log-every 100)
run() {  # run NAME FLAGS...
  local name=$1; shift
  echo "== $name: gsq-finetune ${*}" >&2
  rm -rf "${out:?}/$name"
  "$finetune" "${common[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1 ||
    { echo "fidelity: run $name failed, see $out/$name.log" >&2; tail -5 "$out/$name.log" >&2; exit 1; }
}
declare -A flags=(
  [lora_fp32]="--precision fp32 --base fp32 --ptq-bits 4,3"
  [lora_fp32_nf4]="--precision fp32 --base nf4"
  [lora_w8a8g8]="--precision w8a8g8 --base nf4"
  [lora_w6a6g6]="--precision w6a6g6 --base nf4"
  [lora_w8a8g8_bf16_scope]="--precision w8a8g8 --base nf4 --attention-precision bf16 --classifier-precision bf16"
  [lora_w8a8g8_int_attention]="--precision w8a8g8 --base nf4 --attention-precision same"
  [lora_w8a8g8_int_classifier]="--precision w8a8g8 --base nf4 --int-classifier"
  [lora_w8a8g8_all_int]="--precision w8a8g8 --base nf4 --attention-precision same --int-classifier"
  [lora_w6a6g6_all_int]="--precision w6a6g6 --base nf4 --attention-precision same --int-classifier"
  [l4q_4bit]="--method l4q --precision fp32 --quant-bits 4"
  [l4q_3bit]="--method l4q --precision fp32 --quant-bits 3"
)
mkdir -p "$out"
all_runs="lora_fp32 lora_fp32_nf4 lora_w8a8g8 lora_w6a6g6 lora_w8a8g8_bf16_scope lora_w8a8g8_int_attention lora_w8a8g8_int_classifier
          lora_w8a8g8_all_int lora_w6a6g6_all_int l4q_4bit l4q_3bit"
for name in ${RUNS:-$all_runs}; do
  [ -n "${flags[$name]:-}" ] || { echo "fidelity: unknown run '$name'" >&2; exit 2; }
  # shellcheck disable=SC2086  # the flags are words
  run "$name" ${flags[$name]}
done

python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def summary(name):
    path = os.path.join(out, name, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
if summary("lora_fp32") is None:
    sys.exit("fidelity: the reference run lora_fp32 is missing")
ref = summary("lora_fp32")["eval"]["ppl"]
qlora = summary("lora_fp32_nf4")
print("| run | held-out ppl | vs FP32 LoRA | vs FP32 LoRA on NF4 | peak training MiB (gsq accounting) |")
print("|---|---:|---:|---:|---:|")
rows = [("LoRA FP32, FP32 base", "lora_fp32"), ("LoRA FP32, NF4 base (QLoRA)", "lora_fp32_nf4"),
        ("LoRA W8A8G8, NF4 base", "lora_w8a8g8"), ("LoRA W6A6G6, NF4 base", "lora_w6a6g6"),
        ("W8A8G8 + BF16 attention and classifier", "lora_w8a8g8_bf16_scope"),
        ("W8A8G8 + integer attention", "lora_w8a8g8_int_attention"),
        ("W8A8G8 + integer classifier", "lora_w8a8g8_int_classifier"),
        ("W8A8G8, every product integer", "lora_w8a8g8_all_int"),
        ("W6A6G6, every product integer", "lora_w6a6g6_all_int"),
        ("L4Q 4-bit G128 (quantized model)", "l4q_4bit"), ("L4Q 3-bit G128 (quantized model)", "l4q_3bit")]
for label, name in rows:
    s = summary(name)
    if s is None:
        continue
    ppl = s["eval"]["ppl"]
    vs_qlora = f"{ppl / qlora['eval']['ppl']:.4f}×" if qlora else ""
    print(f"| {label} | {ppl:.4f} | {ppl / ref:.4f}× | {vs_qlora} | {s['peak_train_bytes'] / 2**20:.2f} |")
for bits in (4, 3):
    ppl = summary("lora_fp32")["eval_lora_rtn"][f"lora+rtn-int{bits}/G128"]["ppl"]
    print(f"| LoRA FP32, merged, then {bits}-bit round-to-nearest G128 | {ppl:.4f} | {ppl / ref:.4f}× | | |")
EOF
