#!/usr/bin/env python3
"""gemm_table.py — bench_gemm's JSON output as the Markdown tables of bench/README.md.

    ./build/bench/bench_gemm --benchmark_repetitions=3 --benchmark_format=json > gemm.json
    python3 bench/gemm_table.py gemm.json

Prints GOPS per implementation for every shape and thread count (the best repetition:
the `max` aggregate when repetitions were run), % of the measured VNNI peak for gsq's
rows, and the ratios the GEMM issue sets targets for, all from the one run.
"""

import json
import sys

IMPLS = ["gse8_g32", "gse8_g32_prepacked", "gse8_g128", "gse_a8w4_g32", "qcd8_g32", "nf4_a8_g32", "nf4t_a8_g32",
         "eigen_f32", "onednn_f32", "onednn_bf16", "onednn_s8"]


def load(path):
    with open(path) as f:
        doc = json.load(f)
    peak = float(doc["context"].get("vnni_peak_gops_per_core", "nan"))
    best = {}  # (impl, m, n, k, threads) -> (GOPS, pct_peak)
    for b in doc["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "max":
            continue
        parts = b["run_name"].split("/")
        impl, dims = parts[0], tuple(int(p) for p in parts[1:5])
        key = (impl,) + dims
        gops = b.get("GOPS")
        if gops is None:
            continue
        if key not in best or gops > best[key][0]:
            best[key] = (gops, b.get("pct_peak", float("nan")))
    return peak, best


def main():
    peak, best = load(sys.argv[1])
    shapes = sorted({k[1:] for k in best}, key=lambda s: (s[3], s[0] * s[1] * s[2]))
    impls = [i for i in IMPLS if any(k[0] == i for k in best)]
    print(f"VNNI peak (micro-loop): {peak:.0f} GOPS per core\n")
    print("| M×N×K | thr | " + " | ".join(f"`{i}`" for i in impls) + " |")
    print("|---|---:|" + "---:|" * len(impls))
    for s in shapes:
        cells = []
        for i in impls:
            v = best.get((i,) + s)
            if v is None:
                cells.append("–")
            elif i.startswith(("gse", "qcd", "nf4")):
                cells.append(f"{v[0]:.0f} ({v[1]:.0f}%)")
            else:
                cells.append(f"{v[0]:.0f}")
        print(f"| {s[0]}×{s[1]}×{s[2]} | {s[3]} | " + " | ".join(cells) + " |")

    def g(impl, m, n, k, t):
        v = best.get((impl, m, n, k, t))
        return v[0] if v else float("nan")

    def line(what, value, target):
        ok = "met" if value >= target else "NOT met"
        print(f"| {what} | {value:.2f} | ≥ {target} | {ok} |")

    print("\n| target (2 threads unless said) | measured | target | |")
    print("|---|---:|---:|---|")
    sq = (512, 2048, 2048, 2)
    line("`gse8_g32` / `onednn_s8`, 512×2048×2048", g("gse8_g32", *sq) / g("onednn_s8", *sq), 0.85)
    line("`gse8_g32` / `eigen_f32`", g("gse8_g32", *sq) / g("eigen_f32", *sq), 3.5)
    line("`gse8_g32` / `onednn_bf16`", g("gse8_g32", *sq) / g("onednn_bf16", *sq), 1.8)
    line("`gse8_g32_prepacked` / `onednn_s8` (both prepacked; not a target)",
         g("gse8_g32_prepacked", *sq) / g("onednn_s8", *sq), 0.85)
    line("`gse8_g128` / `onednn_s8`", g("gse8_g128", *sq) / g("onednn_s8", *sq), 0.9)
    line("`qcd8_g32` / `onednn_s8`", g("qcd8_g32", *sq) / g("onednn_s8", *sq), 0.75)
    line("`nf4_a8_g32` / `gse8_g32`", g("nf4_a8_g32", *sq) / g("gse8_g32", *sq), 0.9)
    line("`nf4t_a8_g32` / `gse8_g32`", g("nf4t_a8_g32", *sq) / g("gse8_g32", *sq), 0.9)
    for shape in [(512, 16, 2048), (512, 2048, 16)]:
        v = best.get(("gse8_g32",) + shape + (2,))
        if v:
            line(f"LoRA-thin {shape[0]}×{shape[1]}×{shape[2]}: fraction of VNNI peak", v[1] / 100.0, 0.5)
    line("weight gradient 2048×2048×512 / forward 512×2048×2048 (`gse8_g32`)",
         g("gse8_g32", 2048, 2048, 512, 2) / g("gse8_g32", *sq), 0.8)
    for shape in [(512, 2048, 2048), (2048, 2048, 2048), (512, 5632, 2048), (512, 2048, 5632)]:
        line(f"`gse8_g32` 2 threads / 1 thread, {shape[0]}×{shape[1]}×{shape[2]}",
             g("gse8_g32", *shape, 2) / g("gse8_g32", *shape, 1), 1.85)


if __name__ == "__main__":
    main()
