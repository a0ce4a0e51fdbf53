#!/usr/bin/env python3
"""compare_pytorch.py — gsq's LoRA training step next to PyTorch's, same shapes, same threads.

Runs the training step bench/bench_model.cpp measures — batch 4 x 256 tokens, LoRA r16
(alpha 32) on all seven projections of every block, forward + next-token cross-entropy +
backward + AdamW + zero_grad — in PyTorch, FP32 and with BF16 autocast, on the same models:
stories260K (llama2.c .bin) and tinystories-656K (Hugging Face) from the shared data, and
the random LLaMA shapes d512_h1408_l4, d1024_h2816_l2, d2048_h5632_l1 (head size 64, vocab
2048) and d2048_h5632_l2_v32000 (a real LLaMA vocabulary). Then (unless --no-gsq) runs
bench_model's train_step benchmarks and prints a table:

    model   gsq fp32   gsq int8_linear   gsq int8   torch fp32   torch bf16   (tokens/s, peak MiB)

Memory: gsq reports its own accounting (every buffer it allocates, by category); PyTorch
has no CPU allocator statistics, so its number is the growth of the process's peak
resident set (ru_maxrss) from just before the model is built, measured in a fresh process
per configuration. The two are close in meaning (bytes the step needs) but not identical:
RSS also counts allocator slack and libraries' workspaces.

PyTorch gets its best configuration: each run is a fresh process with OPENBLAS_CORETYPE
removed from its environment (a forced core type disables OpenBLAS's Zen/AVX-512 kernels)
and every thread variant is tried — torch.set_num_threads(t) for t = 1..--threads, with
OPENBLAS_NUM_THREADS=1 and with OPENBLAS_NUM_THREADS=t — and the fastest is reported with
the variant that gave it, as the baselines of bench_gemm get their best settings.

Needs Debian's python3-torch (1.13); without it the script says so and exits 0. The
machine is shared while developing: treat the numbers as provisional.

    python3 bench/compare_pytorch.py --threads 2 [--bench build/bench/bench_model]
"""

import argparse
import json
import math
import os
import resource
import struct
import subprocess
import sys
import time

BATCH = 4
SEQ = 256
RANK = 16
ALPHA = 32.0
HERE = os.path.dirname(os.path.abspath(__file__))


def data_dir():
    env = os.environ.get("GSQ_DATA_DIR")
    return env if env else os.path.join(HERE, "..", "..", "shared", "data")


def model_specs():
    random_shape = lambda d, h, heads, layers: {  # noqa: E731  as bench_model.cpp random_shape()
        "dim": d, "hidden": h, "layers": layers, "heads": heads, "kv_heads": heads,
        "vocab": 2048, "rope": "half", "tied": True}
    return [
        ("stories260K", "models/stories260K/stories260K.bin", None),
        ("tinystories656K", "models/tinystories-656K", None),
        ("d512_h1408_l4", None, random_shape(512, 1408, 8, 4)),
        ("d1024_h2816_l2", None, random_shape(1024, 2816, 16, 2)),
        ("d2048_h5632_l1", None, random_shape(2048, 5632, 32, 1)),
        ("d2048_h5632_l2_v32000", None, dict(random_shape(2048, 5632, 32, 2), vocab=32000)),
    ]


# ---- checkpoints (only what the shapes and weights need) -------------------------------

def read_llama2c(path, torch):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", raw[:28])
    tied = vocab > 0
    vocab = abs(vocab)
    floats = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    cfg = {"dim": dim, "hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv_heads,
           "vocab": vocab, "rope": "interleaved", "tied": tied}
    head = dim // heads
    kv = head * kv_heads
    pos = 0

    def take(*shape):
        nonlocal pos
        n = math.prod(shape)
        t = floats[pos:pos + n].reshape(shape).clone()
        pos += n
        return t

    w = {"embed": take(vocab, dim)}
    att_norm = take(layers, dim)
    wq, wk, wv, wo = take(layers, dim, dim), take(layers, kv, dim), take(layers, kv, dim), take(layers, dim, dim)
    ffn_norm = take(layers, dim)
    w1, w2, w3 = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
    w["norm"] = take(dim)
    for l in range(layers):
        w[f"{l}.attn_norm"], w[f"{l}.mlp_norm"] = att_norm[l], ffn_norm[l]
        for name, t in (("q", wq), ("k", wk), ("v", wv), ("o", wo), ("gate", w1), ("down", w2), ("up", w3)):
            w[f"{l}.{name}"] = t[l]
    return cfg, w


def read_hf(directory, torch):
    with open(os.path.join(directory, "config.json")) as f:
        c = json.load(f)
    cfg = {"dim": c["hidden_size"], "hidden": c["intermediate_size"], "layers": c["num_hidden_layers"],
           "heads": c["num_attention_heads"], "kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
           "vocab": c["vocab_size"], "rope": "half", "tied": c.get("tie_word_embeddings", False)}
    with open(os.path.join(directory, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", "compare_pytorch reads F32 safetensors only"
        b, end = e["data_offsets"]
        tensors[name] = torch.frombuffer(data[b:end], dtype=torch.float32).reshape(e["shape"]).clone()
    w = {"embed": tensors.get("model.embed_tokens.weight", tensors.get("lm_head.weight")),
         "norm": tensors["model.norm.weight"]}
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}."
        w[f"{l}.attn_norm"] = tensors[p + "input_layernorm.weight"]
        w[f"{l}.mlp_norm"] = tensors[p + "post_attention_layernorm.weight"]
        for short, long in names.items():
            w[f"{l}.{short}"] = tensors[p + long + ".weight"]
    if not cfg["tied"]:
        w["lm_head"] = tensors["lm_head.weight"]
    return cfg, w


def random_weights(cfg, torch):
    g = torch.Generator().manual_seed(1)
    d, h, kv = cfg["dim"], cfg["hidden"], cfg["dim"] // cfg["heads"] * cfg["kv_heads"]
    rnd = lambda *s: torch.randn(*s, generator=g) / math.sqrt(s[-1])  # noqa: E731
    w = {"embed": rnd(cfg["vocab"], d), "norm": torch.ones(d)}
    for l in range(cfg["layers"]):
        w[f"{l}.attn_norm"], w[f"{l}.mlp_norm"] = torch.ones(d), torch.ones(d)
        for name, shape in (("q", (d, d)), ("k", (kv, d)), ("v", (kv, d)), ("o", (d, d)),
                            ("gate", (h, d)), ("up", (h, d)), ("down", (d, h))):
            w[f"{l}.{name}"] = rnd(*shape)
    return w


# ---- the model ----------------------------------------------------------------------------

def build(cfg, w, torch):
    nn = torch.nn
    F = torch.nn.functional

    class LoraLinear(nn.Module):
        def __init__(self, weight):
            super().__init__()
            out_f, in_f = weight.shape
            self.weight = nn.Parameter(weight.clone(), requires_grad=False)
            self.lora_a = nn.Parameter(torch.empty(RANK, in_f).uniform_(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f)))
            self.lora_b = nn.Parameter(torch.zeros(out_f, RANK))
            self.scale = ALPHA / RANK

        def forward(self, x):
            return F.linear(x, self.weight) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def rms(x, weight, eps=1e-5):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    head = cfg["dim"] // cfg["heads"]
    inv = 1.0 / (10000.0 ** (torch.arange(0, head, 2).float() / head))
    ang = torch.outer(torch.arange(SEQ).float(), inv)  # [seq, head/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # x [b, heads, seq, head]
        if cfg["rope"] == "interleaved":
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        x1, x2 = x[..., : head // 2], x[..., head // 2:]
        c, s = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
        return x * c + torch.cat((-x2, x1), -1) * s

    class Block(nn.Module):
        def __init__(self, l):
            super().__init__()
            self.attn_norm = nn.Parameter(w[f"{l}.attn_norm"].clone(), requires_grad=False)
            self.mlp_norm = nn.Parameter(w[f"{l}.mlp_norm"].clone(), requires_grad=False)
            self.p = nn.ModuleDict({n: LoraLinear(w[f"{l}.{n}"]) for n in ("q", "k", "v", "o", "gate", "up", "down")})

        def forward(self, x):
            b, t, _ = x.shape
            n = rms(x, self.attn_norm)
            q = self.p["q"](n).view(b, t, cfg["heads"], head).transpose(1, 2)
            k = self.p["k"](n).view(b, t, cfg["kv_heads"], head).transpose(1, 2)
            v = self.p["v"](n).view(b, t, cfg["kv_heads"], head).transpose(1, 2)
            q, k = rope(q), rope(k)
            rep = cfg["heads"] // cfg["kv_heads"]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") \
                else torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(head) +
                                   torch.full((t, t), float("-inf")).triu(1), -1) @ v
            x = x + self.p["o"](a.transpose(1, 2).reshape(b, t, cfg["dim"]))
            n = rms(x, self.mlp_norm)
            return x + self.p["down"](F.silu(self.p["gate"](n)) * self.p["up"](n))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Parameter(w["embed"].clone(), requires_grad=False)
            self.norm = nn.Parameter(w["norm"].clone(), requires_grad=False)
            self.blocks = nn.ModuleList(Block(l) for l in range(cfg["layers"]))

        def forward(self, ids):
            x = F.embedding(ids, self.embed)
            for blk in self.blocks:
                x = blk(x)
            return F.linear(rms(x, self.norm), self.embed)

    return Model()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_one(name, mode, threads, seconds):
    """Runs in a fresh process: prints one JSON line with tokens_per_s and peak MiB."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = {n: (c, r) for n, c, r in model_specs()}[name]
    checkpoint, shape = spec
    before = peak_rss_mib()
    if checkpoint is None:
        cfg = shape
        w = random_weights(cfg, torch)
    else:
        path = os.path.join(data_dir(), checkpoint)
        cfg, w = read_hf(path, torch) if os.path.isdir(path) else read_llama2c(path, torch)
    model = build(cfg, w, torch)
    del w
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, cfg["vocab"], (BATCH, SEQ), generator=g)
    targets = ids.roll(-1, 1)
    targets[:, -1] = -100  # the last position predicts nothing

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, cfg["vocab"]), targets.view(-1),
                                                 ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        return loss.item()

    step()  # warm-up: optimizer state, allocator
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"tokens_per_s": BATCH * SEQ / median, "peak_mib": peak_rss_mib() - before,
                      "steps": len(times)}))


def torch_variants(threads):
    """(label, torch threads, environment) of every thread setting PyTorch is tried with."""
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = []
    for t in range(1, threads + 1):
        for blas in sorted({1, t}):
            out.append((f"torch {t}, openblas {blas}", t,
                        dict(base, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(blas))))
    return out


def measure_best(name, mode, threads, seconds):
    """The fastest of torch_variants(threads): (tokens/s, peak MiB, label)."""
    best = (float("nan"), float("nan"), "failed")
    for label, t, env in torch_variants(threads):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", name, mode,
                              "--threads", str(t), "--seconds", str(seconds)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{name} {mode} ({label}): PyTorch failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if not r["tokens_per_s"] <= best[0]:  # also replaces the initial NaN
            best = (r["tokens_per_s"], r["peak_mib"], label)
    return best


def run_gsq(bench, threads, min_time):
    env = dict(os.environ, GSQ_NUM_THREADS=str(threads))
    cmd = [bench, "--benchmark_filter=^train_step/.*/(fp32|int8_linear|int8)/", "--benchmark_format=json",
           f"--benchmark_min_time={min_time}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"bench_model failed ({out.returncode}): {out.stderr.strip()[:400]}", file=sys.stderr)
        return {}
    results = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        if b.get("error_occurred"):
            continue
        _, model, mode = b["name"].split("/")[:3]
        results[(model, mode)] = (b.get("tokens_per_s", float("nan")), b.get("peak_total_MiB", float("nan")))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--bench", default=os.path.join(HERE, "..", "build", "bench", "bench_model"),
                    help="gsq's bench_model binary (default build/bench/bench_model)")
    ap.add_argument("--no-gsq", action="store_true", help="PyTorch only")
    ap.add_argument("--seconds", type=float, default=3.0, help="PyTorch: time per configuration")
    ap.add_argument("--models", default="", help="comma-separated subset of the model names")
    ap.add_argument("--measure", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.measure:
        measure_one(args.measure[0], args.measure[1], args.threads, args.seconds)
        return 0
    try:
        import torch
    except ImportError:
        print("compare_pytorch: SKIPPED — PyTorch is not importable (apt install python3-torch; run it with "
              "/usr/bin/python3)")
        return 0
    print(f"PyTorch {torch.__version__}, {args.threads} threads, batch {BATCH} x {SEQ} tokens, "
          f"LoRA r{RANK} on all projections, AdamW")
    names = [n for n, _, _ in model_specs()]
    if args.models:
        names = [n for n in names if n in args.models.split(",")]
    gsq = {}
    if not args.no_gsq:
        if os.path.exists(args.bench):
            gsq = run_gsq(args.bench, args.threads, 0.5)
        else:
            print(f"(gsq side skipped: {args.bench} not built; pass --bench)")

    rows = []
    for name in names:
        spec = {n: c for n, c, _ in model_specs()}[name]
        if spec is not None and not os.path.exists(os.path.join(data_dir(), spec)):
            print(f"{name}: skipped, {os.path.join(data_dir(), spec)} is absent")
            continue
        torch_res = {mode: measure_best(name, mode, args.threads, args.seconds) for mode in ("fp32", "bf16")}
        rows.append((name, gsq.get((name, "fp32")), gsq.get((name, "int8_linear")), gsq.get((name, "int8")),
                     torch_res["fp32"], torch_res["bf16"]))

    def cell(v):
        return f"{v[0]:9.0f} {v[1]:8.1f}" if v else f"{'-':>9} {'-':>8}"

    print()
    print(f"{'':16} {'gsq fp32':>18} {'gsq int8_linear':>18} {'gsq int8 (all)':>18} {'torch fp32':>18} "
          f"{'torch bf16':>18}")
    print(f"{'model':16}" + f" {'tok/s':>9} {'peak MiB':>8}" * 5)
    for name, gf, gl, gi, tf, tb in rows:
        print(f"{name:16} {cell(gf)} {cell(gl)} {cell(gi)} {cell(tf)} {cell(tb)}")
    print("\npeak MiB: gsq = its own accounting (all buffers); torch = growth of peak RSS during the run")
    print("\nbest PyTorch variant per row, and the ratios of issue 11's targets "
          "(int8_linear >= 2x torch bf16, int8 >= 3x torch bf16, gsq fp32 >= 1.2x torch fp32):")
    for name, gf, gl, gi, tf, tb in rows:
        ratio = lambda a, b: f"{a[0] / b[0]:.2f}x" if a and b else "-"  # noqa: E731
        print(f"{name:22} fp32: {tf[2]:24} bf16: {tb[2]:24} int8_linear/bf16 {ratio(gl, tb):>6}  "
              f"int8/bf16 {ratio(gi, tb):>6}  fp32/fp32 {ratio(gf, tf):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
