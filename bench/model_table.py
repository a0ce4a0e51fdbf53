#!/usr/bin/env python3
"""model_table.py — bench_model's JSON output as the Markdown tables of bench/README.md.

    ./build/bench/bench_model --benchmark_min_time=0.5 --benchmark_format=json > model.json
    python3 bench/model_table.py model.json

Tokens/s of the forward and of the training step, FP32 against integer (NF4 base, W8A8G8:
int8_linear in the projections and adapters, int8 in every product) from the same run,
with the ratio to FP32, and the training step's peak memory by category.
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
    modes = ("fp32", "int8_linear", "int8")
    print("| model | forward fp32 | forward int8_linear | forward int8 | train step fp32 | train step int8_linear "
          "| train step int8 | peak MiB fp32 | peak MiB int8_linear | peak MiB int8 |")
    print("|---|" + "---:|" * 9)
    for model, r in rows.items():
        try:
            fwd = [r[("forward", m)]["tokens_per_s"] for m in modes]
            step = [r[("train_step", m)] for m in modes]
        except KeyError as e:
            print(f"| {model} | missing {e} |")
            continue
        ts = [b["tokens_per_s"] for b in step]
        peak = [b["peak_total_MiB"] for b in step]
        print(f"| {model} | {fwd[0]:,.0f} | {fwd[1]:,.0f} ({fwd[1] / fwd[0]:.2f}×) | {fwd[2]:,.0f} ({fwd[2] / fwd[0]:.2f}×) "
              f"| {ts[0]:,.0f} | {ts[1]:,.0f} ({ts[1] / ts[0]:.2f}×) | {ts[2]:,.0f} ({ts[2] / ts[0]:.2f}×) "
              f"| {peak[0]:.1f} | {peak[1]:.1f} | {peak[2]:.1f} |")
    print("\nTraining step, peak MiB by category:\n")
    print("| model | mode | " + " | ".join(CATEGORIES) + " | total |")
    print("|---|---|" + "---:|" * (len(CATEGORIES) + 1))
    for model, r in rows.items():
        for mode in modes:
            b = r.get(("train_step", mode))
            if b:
                cells = " | ".join(f"{b['peak_' + c + '_MiB']:.2f}" for c in CATEGORIES)
                print(f"| {model} | {mode} | {cells} | {b['peak_total_MiB']:.2f} |")


if __name__ == "__main__":
    main()
