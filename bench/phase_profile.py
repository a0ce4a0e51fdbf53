#!/usr/bin/env python3
"""phase_profile.py — where one training step spends its time, by phase (bench/README.md).

Samples one bench_model benchmark with `perf record` (the first seconds, which build the
random model, are skipped with -D), then buckets `perf report`'s self time per symbol into
phases by the symbol's name: integer GEMM, float GEMM, quantize, attention, elementwise,
optimizer, memset/copy/page faults, other. Samples of the set-up that remain
(random_llama_weights and the libm calls it makes) are left out of the total.

    python3 bench/phase_profile.py '^train_step/d2048_h5632_l1/int8_linear/' [--bench PATH]

Needs `perf` (Debian: linux-perf) and permission to use it (root, or
kernel.perf_event_paranoid <= 1).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP = r"random_llama_weights|__cosf|__logf|nf4_quantize_row|sincos"
PHASES = [
    ("integer GEMM", r"avx512_vnni::|avx2::run_tiles|gemm::gemm_nt|run_packed"),
    ("float GEMM", r"f32_avx512::|f32_avx2::|bf16_avx512::|run_float_gemm"),
    ("quantize", r"quant::kernels|quantize_gse|dequantize"),
    ("attention", r"CausalAttention|nn::kernels::avx512::(scores|accumulate)|__expf|expf@plt"),
    ("elementwise", r"SwiGlu|RmsNorm|Rope|add_into|classifier_cross_entropy|cross_entropy|add_exp_sum|Embedding"),
    ("optimizer", r"AdamW|optim::"),
    ("memset/copy/page faults", r"memset|memmove|memcpy|page"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("filter", help="bench_model --benchmark_filter (one benchmark)")
    ap.add_argument("--bench", default=os.path.join(HERE, "..", "build", "bench", "bench_model"))
    ap.add_argument("--seconds", type=float, default=10.0, help="--benchmark_min_time")
    ap.add_argument("--skip-ms", type=int, default=4000, help="perf record -D: the set-up to skip")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-D", str(args.skip_ms), "-F", "999", "-o", data, args.bench,
                        f"--benchmark_filter={args.filter}", f"--benchmark_min_time={args.seconds}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym"],
                                check=True, capture_output=True, text=True).stdout
    totals = {name: 0.0 for name, _ in PHASES}
    setup = other = 0.0
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        if re.search(SETUP, sym):
            setup += pct
            continue
        for name, rx in PHASES:
            if re.search(rx, sym):
                totals[name] += pct
                break
        else:
            other += pct
    step = sum(totals.values()) + other
    if step <= 0:
        sys.exit("phase_profile: no samples (is perf allowed? see the docstring)")
    print(f"{args.filter}: {step:.1f}% of samples in the step, {setup:.1f}% set-up left out\n")
    print("| phase | % of step |\n|---|---:|")
    for name, _ in PHASES:
        print(f"| {name} | {100 * totals[name] / step:.1f} |")
    print(f"| other (thread pool, kernel, rest) | {100 * other / step:.1f} |")
    print(f"\nGEMMs together: {100 * (totals['integer GEMM'] + totals['float GEMM']) / step:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
