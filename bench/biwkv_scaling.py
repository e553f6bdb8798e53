"""Bi-WKV against exact softmax attention over the same tokens, side by side.

For each sequence length L (C channels, batch B) it times forward and backward of
`bi_wkv` (each available O(L) backend), of the plain cumulative-sum form of the same
operator (a speed reference only: it overflows under strong decay or a wide key range)
and of `scaled_dot_product_attention` (SD1.5's head layout: C/40 heads of 40 channels),
measures the peak memory each needs beyond its inputs, prints the ratios (attention over
each, the torch backend over the cumsum form) and the fitted scaling exponent of each
(time ~ L^p), and writes a Markdown report (machine named), a JSON file and a PNG plot
to bench/results/.

    python -m bench.biwkv_scaling                       # L = 1k..64k, C = 320, B = 2
    python -m bench.biwkv_scaling --lengths 1024 4096 --device cuda
    OMP_NUM_THREADS=2 python -m bench.biwkv_scaling --lengths 4096 16384 --batch 1

On the CPU every case runs in its own process, so the peak resident memory it reports
is that case's own. Attention is skipped where its projected time exceeds --budget-s.
On CUDA the report adds achieved bandwidth (bytes Bi-WKV must move at least, per second)
against the card's measured copy bandwidth.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import load_pack, machine_name

RESULTS = Path(__file__).resolve().parent / "results"
HEAD_DIM = 40  # SD1.5 attention: 8 heads of 40 channels at C = 320


def bi_wkv_cumsum(w, u, k, v):
    """Bi-WKV as plain cumulative sums of e^{k - max k} e^{+-i*w} (autograd backward): exact
    in exact arithmetic and the least work in PyTorch, but e^{+-i*w} overflows once L*|w|
    passes ~88 (float32) and e^{k - max k} underflows over a wide key range."""
    L = k.shape[1]
    pos = torch.arange(L, device=k.device, dtype=k.dtype)[:, None]
    ek = torch.exp(k - k.amax(dim=1, keepdim=True))
    up, down = torch.exp(pos * w), torch.exp(-pos * w)                    # e^{iw}, e^{-iw}

    def past(x):    # sum_{i<t} e^{-(t-1-i)w} x_i
        c = torch.cumsum(x * up, dim=1)
        return torch.nn.functional.pad(c[:, :-1], (0, 0, 1, 0)) * down * torch.exp(w)

    def future(x):  # sum_{i>t} e^{-(i-t-1)w} x_i
        c = torch.cumsum((x * down).flip(1), dim=1).flip(1)
        return torch.nn.functional.pad(c[:, 1:], (0, 0, 0, 1)) * up * torch.exp(w)

    es, ekv = torch.exp(u) * ek, ek * v
    return (past(ekv) + future(ekv) + es * v) / (past(ek) + future(ek) + es)


def make_case(method, B, L, C, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    if method == "sdpa":
        shape = (B, C // HEAD_DIM, L, HEAD_DIM)
        q, k, v = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_(True) for _ in range(3))
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
        return fn, (q, k, v)
    from vrwkv_editor.kernels import bi_wkv
    k, v = (torch.randn(B, L, C, generator=g).to(device, dtype).requires_grad_(True) for _ in range(2))
    w, u = (torch.full((C,), 1.0 / L, device=device).requires_grad_(True) for _ in range(2))
    if method == "cumsum":
        return (lambda: bi_wkv_cumsum(w, u, k, v)), (w, u, k, v)
    backend = method.split(":")[1]
    return (lambda: bi_wkv(w, u, k, v, backend=backend)), (w, u, k, v)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(method, B, L, C, device, dtype, repeats):
    """(forward s, backward s, peak bytes beyond the inputs): medians over repeats."""
    warm, _ = make_case(method, B, min(L, 256), C, device, dtype)
    warm().float().sum().backward()  # compiles kernels and loads libraries outside the timing
    fn, inputs = make_case(method, B, L, C, device, dtype)
    base = current_rss() if device == "cpu" else None
    fwd, bwd = [], []
    if device == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        for t in inputs:
            t.grad = None
        sync(device)
        t0 = time.perf_counter()
        y = fn()
        sync(device)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        sync(device)
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
        del y
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:  # this process's peak resident memory (warm-up included) over that with the inputs
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    fwd.sort()
    bwd.sort()
    return fwd[len(fwd) // 2], bwd[len(bwd) // 2], max(peak, 0)


def current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_isolated(method, B, L, C, dtype, repeats):
    """One CPU case in a fresh process, so ru_maxrss is that case's peak."""
    cmd = [sys.executable, "-m", "bench.biwkv_scaling", "--one", method, str(L), "--channels", str(C),
           "--batch", str(B), "--dtype", dtype, "--repeats", str(repeats), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_exponent(lengths, times):
    """Least-squares slope of log(time) on log(L)."""
    xs = torch.tensor(lengths, dtype=torch.float64).log()
    ys = torch.tensor(times, dtype=torch.float64).log()
    xm, ym = xs.mean(), ys.mean()
    return float(((xs - xm) * (ys - ym)).sum() / ((xs - xm) ** 2).sum())


def copy_bandwidth():
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    a = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - t0)


def min_bytes(B, L, C, dtype):
    """The operator's least traffic for one forward + backward: read k, v, write y; then
    read k, v, gy, write gk, gv."""
    es = torch.empty((), dtype=dtype).element_size()
    return B * L * C * 8 * es


def measure(args, methods, dtype):
    rows = []
    skip = set()
    for L in args.lengths:
        for method in methods:
            row = {"L": L, "method": method}
            if method in skip:
                row["skipped"] = "projected time over --budget-s"
                rows.append(row)
                continue
            repeats = args.repeats if L <= 8192 or args.device == "cuda" else 1
            try:
                if args.device == "cpu":
                    res = run_isolated(method, args.batch, L, args.channels, args.dtype, repeats)
                else:
                    f, b, p = time_case(method, args.batch, L, args.channels, "cuda", dtype, repeats)
                    res = {"fwd_s": f, "bwd_s": b, "peak_bytes": p}
                    torch.cuda.empty_cache()
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                row["skipped"] = f"failed: {str(e).splitlines()[-1][:120]}"
                skip.add(method)
                rows.append(row)
                continue
            row.update(res)
            rows.append(row)
            total = res["fwd_s"] + res["bwd_s"]
            growth = 4.0 if method == "sdpa" else 2.0
            if total * growth > args.budget_s:
                skip.add(method)
            print(f"  L={L:6d} {method:14s} fwd {res['fwd_s']:.4f}s bwd {res['bwd_s']:.4f}s "
                  f"peak {res['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    return rows


def report(args, rows, methods, machine, bandwidth, load):
    by = {(r["L"], r["method"]): r for r in rows}
    ours = [m for m in methods if m != "sdpa"]
    lines = [f"# Bi-WKV vs softmax attention: {machine}", "",
             f"B = {args.batch}, C = {args.channels}, dtype {args.dtype}, torch {torch.__version__}, "
             f"attention = scaled_dot_product_attention with {args.channels // HEAD_DIM} heads of {HEAD_DIM}. "
             "Times are forward + backward; memory is the peak beyond the inputs. "
             f"{torch.get_num_threads()} threads; 1-minute load average {load[0]:.1f} at the start, "
             f"{load[1]:.1f} at the end (how busy the machine was).", ""]
    head = "| L | " + " | ".join(f"{m} time (s) | {m} mem (MiB)" for m in methods)
    head += " | " + " | ".join(f"sdpa/{m} time | sdpa/{m} mem" for m in ours) + " | torch/cumsum time |"
    lines += [head, "|" + "---|" * (2 + 2 * len(methods) + 2 * len(ours))]
    for L in args.lengths:
        cells = []
        for m in methods:
            r = by[(L, m)]
            cells += ["-", "-"] if "skipped" in r else [f"{r['fwd_s'] + r['bwd_s']:.4f}", f"{r['peak_bytes'] / 2**20:.1f}"]
        for m in ours:
            a, r = by[(L, "sdpa")], by[(L, m)]
            if "skipped" in a or "skipped" in r:
                cells += ["-", "-"]
            else:
                cells += [f"{(a['fwd_s'] + a['bwd_s']) / (r['fwd_s'] + r['bwd_s']):.2f}x",
                          f"{a['peak_bytes'] / max(r['peak_bytes'], 1):.2f}x"]
        t, c = by[(L, "biwkv:torch")], by[(L, "cumsum")]
        cells.append("-" if "skipped" in t or "skipped" in c else
                     f"{(t['fwd_s'] + t['bwd_s']) / (c['fwd_s'] + c['bwd_s']):.2f}x")
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    lines += ["", "Fitted scaling exponent p (time ~ L^p, over the measured lengths >= 2048):", ""]
    exps = {}
    for m in methods:
        pts = [(r["L"], r["fwd_s"] + r["bwd_s"]) for r in rows if r["method"] == m and "skipped" not in r and r["L"] >= 2048]
        if len(pts) >= 2:
            exps[m] = fit_exponent(*zip(*pts))
            lines.append(f"- {m}: p = {exps[m]:.2f} over L = {pts[0][0]}..{pts[-1][0]}")
    if bandwidth:
        lines += ["", f"Measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s. Achieved by Bi-WKV (least bytes "
                  "a forward + backward must move / time):", ""]
        dt = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[args.dtype])
        for m in ours:
            for L in args.lengths:
                r = by[(L, m)]
                if "skipped" not in r:
                    gbs = min_bytes(args.batch, L, args.channels, dt) / (r["fwd_s"] + r["bwd_s"])
                    lines.append(f"- {m}, L = {L}: {gbs / 1e9:.0f} GB/s ({100 * gbs / bandwidth:.0f}% of copy)")
    return "\n".join(lines) + "\n", exps


def plot(path, args, rows, methods, machine):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in methods:
        pts = [r for r in rows if r["method"] == m and "skipped" not in r]
        if not pts:
            continue
        Ls = [r["L"] for r in pts]
        axes[0].loglog(Ls, [r["fwd_s"] + r["bwd_s"] for r in pts], "o-", label=m)
        axes[1].loglog(Ls, [max(r["peak_bytes"], 1) / 2**20 for r in pts], "o-", label=m)
    for ax, title in zip(axes, ("forward + backward time (s)", "peak memory beyond inputs (MiB)")):
        ax.set_xlabel("tokens L")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Bi-WKV vs softmax attention, B={args.batch}, C={args.channels}, {args.dtype}: {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024 * 2**i for i in range(7)])
    ap.add_argument("--channels", type=int, default=320)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None,
                    help="default: bf16 on CUDA, fp32 on the CPU")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=120.0, help="skip a method once its next case would exceed this")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "L"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    dtype = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[args.dtype])
    load_pack()
    if args.one:
        f, b, p = time_case(args.one[0], args.batch, int(args.one[1]), args.channels, args.device, dtype, args.repeats)
        print(json.dumps({"fwd_s": f, "bwd_s": b, "peak_bytes": p}))
        return
    from vrwkv_editor.kernels import triton_status
    methods = ["biwkv:torch", "cumsum", "sdpa"]
    if args.device == "cuda" and triton_status()[0] is not None:
        methods.insert(0, "biwkv:triton")
    machine = machine_name(args.device)
    print(f"Bi-WKV vs attention on {machine}: B={args.batch} C={args.channels} {args.dtype}", flush=True)
    load_start = os.getloadavg()[0]
    rows = measure(args, methods, dtype)
    bandwidth = copy_bandwidth() if args.device == "cuda" else None
    load = (load_start, os.getloadavg()[0])
    text, exps = report(args, rows, methods, machine, bandwidth, load)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    tag = f"{args.device}_{args.dtype}"
    (RESULTS / f"biwkv_scaling_{tag}.md").write_text(text)
    (RESULTS / f"biwkv_scaling_{tag}.json").write_text(json.dumps(
        {"machine": machine, "platform": platform.platform(), "torch": torch.__version__, "args": vars(args),
         "rows": rows, "exponents": exps, "copy_bandwidth": bandwidth, "load_average": load}, indent=1))
    plot(RESULTS / f"biwkv_scaling_{tag}.png", args, rows, methods, machine)
    print(f"wrote bench/results/biwkv_scaling_{tag}.{{md,json,png}}")


if __name__ == "__main__":
    main()
