#!/usr/bin/env python3
"""model_table.py — bench_model's JSON output as the Markdown tables of bench/README.md.

    ./build/bench/bench_model --benchmark_min_time=0.5 --benchmark_format=json > model.json
    python3 bench/model_table.py model.json

Tokens/s of the forward and of the training step, FP32 against integer (NF4 base, W8A8G8)
from the same run, and the training step's peak memory by category.
"""

import json
import sys

CATEGORIES = ["weights", "activations", "gradients", "optimizer_state", "scratch"]


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    rows = {}
    for b in doc["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        what, model, mode = b["run_name"].split("/")[:3]
        rows.setdefault(model, {})[(what, mode)] = b
    print("| model | forward fp32 | forward int8 | ratio | train step fp32 | train step int8 | ratio | "
          "peak MiB fp32 | peak MiB int8 | fp32 / int8 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, r in rows.items():
        try:
            f32, f8 = r[("forward", "fp32")]["tokens_per_s"], r[("forward", "int8")]["tokens_per_s"]
            t32, t8 = r[("train_step", "fp32")], r[("train_step", "int8")]
        except KeyError as e:
            print(f"| {model} | missing {e} |")
            continue
        ts32, ts8 = t32["tokens_per_s"], t8["tokens_per_s"]
        p32, p8 = t32["peak_total_MiB"], t8["peak_total_MiB"]
        print(f"| {model} | {f32:,.0f} | {f8:,.0f} | {f8 / f32:.2f}× | {ts32:,.0f} | {ts8:,.0f} | "
              f"{ts8 / ts32:.2f}× | {p32:.1f} | {p8:.1f} | {p32 / p8:.2f}× |")
    print("\nTraining step, peak MiB by category:\n")
    print("| model | mode | " + " | ".join(CATEGORIES) + " | total |")
    print("|---|---|" + "---:|" * (len(CATEGORIES) + 1))
    for model, r in rows.items():
        for mode in ("fp32", "int8"):
            b = r.get(("train_step", mode))
            if b:
                cells = " | ".join(f"{b['peak_' + c + '_MiB']:.2f}" for c in CATEGORIES)
                print(f"| {model} | {mode} | {cells} | {b['peak_total_MiB']:.2f} |")


if __name__ == "__main__":
    main()
