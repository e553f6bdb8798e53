"""The GPU check: everything the pack must show the first time it meets a GPU, in one run.

    bash scripts/gpu_check.sh              # CUDA: writes bench/results/gpu_<device>.md
    bash scripts/gpu_check.sh --dry-run    # CPU, Triton's interpreter, tiny shapes (CI)

Sections, each a table in the results file:
1. Triton vs the torch backend in float64, forward and all four gradients, at L from 1 to
   100000, channel counts that are not a multiple of the kernels' block width, w*L of
   both signs, fp32 and fp32 w with bf16/fp16 k, v, and strided inputs;
2. time, achieved bandwidth (least traffic / time) against the card's copy bandwidth, and
   peak memory at the shapes the UNet levels produce (torch backend, Triton, SDPA over
   the same tokens);
3. one real-size VRWKV block, the paper's and VRWKV Patch Model's default: fp16 sampling, two
   windows with exact carry against the whole clip, and a bf16-autocast tuning step with
   gradient checkpointing (finite, time, peak memory);
4. the unit tier's kernel tests and the sync count on CUDA (pytest);
5. with COMFYUI_PATH: example workflow 1 on a random SD1.5 at 512x512, 16 frames, on the GPU.
Exits 1 on any mismatch, non-finite result or failed test; timings never fail it.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from . import load_pack, machine_name  # noqa: E402
from .biwkv_scaling import copy_bandwidth, min_bytes, time_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Max error relative to max|reference| (y; the four gradients). Half inputs are compared on
# the same rounded values: what is left is the rounding of y, gk, gv and the incoming
# gradient, and fp32 accumulation over up to 10^5 tokens.
TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (5e-3, 2e-2), "bf16": (2e-2, 6e-2)}
# Nominal HBM bandwidth (bytes/s) by device name, beside the measured copy bandwidth.
NOMINAL_BW = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H200": 4.8e12, "A100-SXM4-80GB": 2.04e12,
              "A100-SXM4-40GB": 1.56e12, "A100-PCIE-40GB": 1.56e12, "A100 80GB PCIe": 1.94e12}

# (label, B, L, C, dtype, strided, w*L range)
GPU_CASES = [(f"L={L}", 2, L, 40, dt, False, (-3.0, 5.0)) for L in (1, 33, 1025, 3000, 33000, 100000)
             for dt in DTYPES] + [
    ("C=3, strong decay", 2, 3000, 3, "fp32", False, (-8.0, 40.0)),
    ("C=77", 1, 1025, 77, "fp32", False, (-3.0, 5.0)),
    *[(f"strided L={L}", 2, L, 40, dt, True, (-3.0, 5.0)) for L in (1025, 33000) for dt in DTYPES],
]
DRY_CASES = [("L=1", 2, 1, 5, "fp32", False, (-3.0, 5.0)), ("L=33", 2, 33, 5, "fp32", False, (-3.0, 5.0)),
             ("L=70", 1, 70, 9, "bf16", False, (-3.0, 5.0)), ("strided L=33", 1, 33, 5, "fp16", True, (-3.0, 5.0))]
# UNet levels at 512 px x 24 frames (64x64, 32x32, 16x16 latents) and 128 frames at 64x64.
GPU_SHAPES = [(2, 4096 * 24, 320), (2, 1024 * 24, 640), (2, 256 * 24, 1280), (2, 4096 * 128, 320)]
DRY_SHAPES = [(1, 16, 4)]


def case_inputs(B, L, C, dtype, strided, wl, device):
    """(w, u, k, v, gy) with w*L spread over wl across channels; strided k, v, gy are
    views with gaps (every other channel of a wider tensor, L-major storage)."""
    g = torch.Generator().manual_seed(L * 131 + C)
    w = torch.linspace(wl[0], wl[1], C, dtype=torch.float64) / max(L, 1)
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k, v, gy = (s * torch.randn(B, L, C, generator=g, dtype=torch.float64) for s in (2.0, 1.0, 1.0))
    w, u = w.float().to(device), u.float().to(device)
    k, v, gy = (t.to(device, DTYPES[dtype]) for t in (k, v, gy))
    if strided:
        def gappy(t):
            wide = torch.zeros(t.shape[1], t.shape[0], 2 * C, device=device, dtype=t.dtype)
            wide[..., ::2] = t.transpose(0, 1)
            return wide[..., ::2].transpose(0, 1)
        k, v, gy = gappy(k), gappy(v), gappy(gy)
        assert not k.is_contiguous()
    return w, u, k, v, gy


def rel_err(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def correctness(cases, device):
    from vrwkv_editor.kernels import bi_wkv
    rows, ok = [], True
    for label, B, L, C, dt, strided, wl in cases:
        w, u, k, v, gy = case_inputs(B, L, C, dt, strided, wl, device)
        row = {"case": label, "shape": (B, L, C), "dtype": f"k,v {dt}, w fp32", "w*L": f"{wl[0]:g}..{wl[1]:g}"}
        try:
            args = [t.detach().requires_grad_(True) for t in (w, u, k, v)]  # views stay strided
            y = bi_wkv(*args, backend="triton")
            got = (y, *torch.autograd.grad(y, args, gy))
            ref = [t.detach().double().requires_grad_(True) for t in (w, u, k, v)]
            y_ref = bi_wkv(*ref, backend="torch")
            want = (y_ref, *torch.autograd.grad(y_ref, ref, gy.double()))
            errs = [rel_err(a, b) for a, b in zip(got, want)]
            tol_y, tol_g = TOLERANCE[dt]
            passed = errs[0] <= tol_y and all(e <= tol_g for e in errs[1:])  # False for NaN
            row.update(zip(("y", "gw", "gu", "gk", "gv"), (f"{e:.2e}" for e in errs)))
            row["result"] = "pass" if passed else f"MISMATCH (tolerance {tol_y:g} / {tol_g:g})"
        except Exception as e:
            passed = False
            row["result"] = f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        ok &= passed
        print(f"  {label:22s} {dt}: {row['result']}", flush=True)
        rows.append(row)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows, ok


def performance(shapes, device, bandwidth, repeats):
    """Forward + backward of each method at each shape; bandwidth from the operator's
    least traffic (biwkv_scaling.min_bytes)."""
    methods = [("torch backend", "bi_wkv:torch", "fp32"), ("Triton", "bi_wkv:triton", "fp32"),
               ("Triton", "bi_wkv:triton", "bf16"), ("SDPA", "sdpa", "bf16")]
    if device == "cpu":
        methods = [m for m in methods if m[2] == "fp32"]
    rows = []
    for B, L, C in shapes:
        for name, method, dt in methods:
            row = {"shape": (B, L, C), "method": name, "dtype": dt}
            try:
                reps = 1 if method == "sdpa" and L > 200_000 else repeats  # ~20 s per run on an H100
                fwd, bwd, peak = time_case(method, B, L, C, device, DTYPES[dt], reps)
                row.update(fwd_ms=f"{fwd * 1e3:.2f}", bwd_ms=f"{bwd * 1e3:.2f}", peak_mib=f"{peak / 2**20:.0f}")
                if method != "sdpa":
                    gbs = min_bytes(B, L, C, DTYPES[dt]) / (fwd + bwd)
                    row["GB/s"] = f"{gbs / 1e9:.0f}" + (f" ({gbs / bandwidth:.0%})" if bandwidth else "")
            except Exception as e:  # an OOM of attention at 500k tokens is a result, not a failure
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            print(f"  {(B, L, C)} {name} {dt}: {row}", flush=True)
            rows.append(row)
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _peak_run(fn, device):
    """(seconds, peak bytes above what was allocated before, result) of fn()."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base, out
    return time.perf_counter() - t0, float("nan"), out


def tuned_like(block):
    """Random mu, decay, bonus and output projections: zero-init outputs would make the block
    an identity and hide every error in the mixing."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(("decay", "first")) or ".mu" in name:
                p.copy_(torch.rand_like(p) * 2)
            elif not p.any():
                p.normal_(0, 1.0)
    return block


def windows_with_carry(block, x, gate, frames):
    """The block on the clip's two halves with exact carry (future of the second half first,
    as tests/test_windows.py does it) against the whole clip: max relative error."""
    from vrwkv_editor.vrwkv.carry import FrameCarry
    half = frames // 2
    first = (torch.arange(x.shape[0] // frames, device=x.device)[:, None] * frames + torch.arange(half, device=x.device)).flatten()
    second = first + half
    block.spatial_mix.norm_frames = half
    with torch.inference_mode():
        whole = block(x, frames, gate)
        draft = FrameCarry(next_start=half)
        block(x[first], half, gate[first], carry=draft)
        last = FrameCarry(prev=draft.out_prev, prev_end=0)
        block(x[second], half, gate[second], carry=last)
        head = FrameCarry(future=last.out_future, next_start=half)
        y1 = block(x[first], half, gate[first], carry=head)
        y2 = block(x[second], half, gate[second], carry=FrameCarry(past=head.out_past, prev=head.out_prev))
    block.spatial_mix.norm_frames = None
    return max(rel_err(y1 - x[first], (whole - x)[first].double()), rel_err(y2 - x[second], (whole - x)[second].double()))


def real_block(device, dry):
    """VRWKVBlock3D(320, gate 640) on 24 frames of 64x64, the paper block and the lean one
    (the node's default is one of them): fp16 sampling with CFG (two videos) against the fp32 block, the clip in two
    windows with exact carry against the whole clip, and a bf16-autocast tuning step with
    checkpointing."""
    from vrwkv_editor.vrwkv.blocks import VRWKVBlock3D
    from vrwkv_editor.vrwkv.config import LEAN, PAPER
    real_blocks = {"paper block": PAPER, "lean block": LEAN}
    C, Cg, frames, size = (8, 16, 4, 4) if dry else (320, 640, 24, 64)
    x = torch.randn(2 * frames, C, size, size, device=device, generator=torch.Generator(device).manual_seed(0))
    gate = torch.randn(2 * frames, Cg, size, size, device=device, generator=torch.Generator(device).manual_seed(1))
    rows, ok = [], True
    for kind, config in real_blocks.items():
        torch.manual_seed(0)
        block = tuned_like(VRWKVBlock3D(C, Cg, config).to(device))
        with torch.inference_mode():
            ref = block(x, frames, gate)
        half = VRWKVBlock3D(C, Cg, config).to(device, torch.float16)
        half.load_state_dict(block.state_dict())
        cast = VRWKVBlock3D(C, Cg, config.replace(half_precision_sampling=True)).to(device)
        cast.load_state_dict(block.state_dict())
        for name, model in (("fp16 features, fp32 block (the default)", block), ("fp16 block", half),
                            ("fp16 features, half_precision_sampling", cast)):
            for rep in range(2 if device == "cuda" else 1):  # the first run compiles the kernels
                with torch.inference_mode():
                    sec, peak, out = _peak_run(lambda: model(x.half(), frames, gate.half()), device)
            finite = bool(torch.isfinite(out).all())
            err = rel_err(out.float() - x.half().float(), (ref - x).double())
            ok &= finite and err < 5e-2
            rows.append({"block": kind, "run": f"sampling, {name}, CFG batch (2 videos)", "finite": finite,
                         "seconds": f"{sec:.3f}", "peak MiB": f"{peak / 2**20:.0f}",
                         "vs fp32": f"{err:.2e} (of the block's change)"})
        sec, _, err = _peak_run(lambda: windows_with_carry(block, x, gate, frames), device)
        ok &= err < 1e-3
        rows.append({"block": kind, "run": f"two windows of {frames // 2} frames, exact carry, fp32", "finite": True,
                     "seconds": f"{sec:.3f}", "peak MiB": "", "vs fp32": f"{err:.2e} (vs the whole clip)"})

        block.gradient_checkpointing = True
        opt = torch.optim.AdamW(block.parameters(), lr=3e-5)
        xs, gs = x[:frames].clone(), gate[:frames].clone()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = block(xs, frames, gs).float().square().mean()
            loss.backward()
            opt.step()
            return loss.detach(), [p.grad for p in block.parameters() if p.grad is not None]

        for rep in range(2 if device == "cuda" else 1):
            sec, peak, (loss, grads) = _peak_run(step, device)
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        ok &= finite
        rows.append({"block": kind, "run": "tuning step, bf16 autocast, checkpointing, AdamW (1 video)",
                     "finite": finite, "seconds": f"{sec:.3f}", "peak MiB": f"{peak / 2**20:.0f}",
                     "vs fp32": f"{len(grads)} finite gradients" if finite else "non-finite"})
    for r in rows:
        print(f"  {r}", flush=True)
    return rows, ok


def unit_tests():
    """The unit tier's kernel tests and the sync count, on CUDA as well as the CPU."""
    files = ["tests/test_bi_wkv_torch.py", "tests/test_bi_wkv_triton.py", "tests/test_triton_self_check.py",
             "tests/test_cuda_syncs.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    failures = [line for line in out.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    print(f"  pytest: {tail}", flush=True)
    return {"summary": tail, "failures": failures}, out.returncode == 0


class _GpuMemoryPoll(threading.Thread):
    """Largest GPU memory in use (nvidia-smi, all processes) while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                       "-i", "0"], capture_output=True, text=True, timeout=10).stdout
                self.peak = max(self.peak, int(used.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self.stop.wait(0.5)


def workflow():
    """Example workflow 1 headless (tools/edit_video.py) on a random full SD1.5."""
    poll = _GpuMemoryPoll()
    poll.start()
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "tools/edit_video.py", "--gpu", "--random", "full", "--frames", "16",
                               "--size", "512", "--tune-steps", "3", "--ddim-steps", "3", "--out", out_dir],
                              cwd=ROOT, capture_output=True, text=True, timeout=420)
        sec = time.perf_counter() - t0
    poll.stop.set()
    ok = proc.returncode == 0
    wrote = re.findall(r"wrote .*", proc.stdout)
    row = {"run": "workflow 1, random full SD1.5, 512x512, 16 frames, 3 tuning + 3 DDIM steps",
           "result": wrote[-1] if ok and wrote else f"FAILED: {(proc.stderr or proc.stdout)[-400:]}",
           "seconds (server start included)": f"{sec:.0f}", "peak GPU MiB (nvidia-smi)": poll.peak}
    print(f"  {row}", flush=True)
    return row, ok


def table(rows, keys=None):
    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton's interpreter, tiny shapes")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/gpu_<device>.md)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-timing", action="store_true",
                    help="skip the timing table (bench/gpu_bench.py times the kernels itself)")
    args = ap.parse_args(argv)
    load_pack()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --dry-run to check the script on the CPU")
    from vrwkv_editor.kernels import triton_status
    if triton_status()[0] is None:
        raise SystemExit(f"gpu_check: the Triton backend is unavailable ({triton_status()[1]})")
    if args.dry_run:
        from tools import fast_interpreter
        fast_interpreter.install()
    import triton
    machine = machine_name(device)
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_dry_run.md" if args.dry_run
                       else RESULTS / f"gpu_{slug(torch.cuda.get_device_name())}.md")
    bandwidth = copy_bandwidth() if device == "cuda" else None
    nominal = next((bw for name, bw in NOMINAL_BW.items() if device == "cuda" and name in torch.cuda.get_device_name()),
                   None)
    started, ok, sections = time.perf_counter(), True, []

    def write(done=False):
        """The results file, rewritten after every section: a run cut off by a time limit
        still leaves what it measured."""
        from vrwkv_editor.kernels import dispatch
        if done:
            result = "PASS" if ok else "FAIL"
        else:
            result = "incomplete: cut off or still running" + ("" if ok else "; a section failed")
        head = [f"# GPU check: {machine}", "",
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, triton "
                f"{triton.__version__}; `bash scripts/gpu_check.sh{' --dry-run' if args.dry_run else ''}`; "
                f"{time.perf_counter() - started:.0f} s; result: **{result}**."]
        verdicts = "; ".join(f"{d} {str(t).replace('torch.', '')}: {r or 'passed'}"
                             for (d, t), r in dispatch._verdicts.items())
        head.append(f"The auto backend's self-check of the Triton kernels: {verdicts or 'not run (no auto call on CUDA)'}.")
        if bandwidth:
            head.append(f"Measured device copy bandwidth {bandwidth / 1e9:.0f} GB/s"
                        + (f" (nominal {nominal / 1e9:.0f} GB/s)." if nominal else "."))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(head) + "\n\n" + "\n".join(sections))

    def section(title, fn):
        nonlocal ok
        print(f"== {title}", flush=True)
        try:
            text, passed = fn()
        except Exception:
            text, passed = "```\n" + traceback.format_exc()[-3000:] + "\n```", False
        ok &= passed
        sections.append(f"## {title}{'' if passed else ' (FAILED)'}\n\n{text}\n")
        write()

    def check():
        rows, passed = correctness(DRY_CASES if args.dry_run else GPU_CASES, device)
        return table(rows), passed

    def perf():
        repeats = 1 if args.dry_run else args.repeats
        rows = performance(DRY_SHAPES if args.dry_run else GPU_SHAPES, device, bandwidth, repeats)
        note = (f"Forward and backward times are medians of {repeats} runs (1 for SDPA above 200k tokens); "
                "peak memory is beyond the inputs. GB/s is the operator's least traffic (read k, v, write y; "
                "read k, v, gy, write gk, gv) per second, and the share is of the measured copy bandwidth. "
                "SDPA: softmax attention over the same tokens, heads of 40 channels.\n\n")
        return note + table(rows), True

    def block():
        rows, passed = real_block(device, args.dry_run)
        return table(rows), passed

    section("Triton vs the torch backend (float64): forward and the four gradients", check)
    if not args.no_timing:
        section("Time, bandwidth and memory at the UNet's shapes", perf)
    section("One real-size VRWKV block" + (" (dry run: tiny)" if args.dry_run else ""), block)
    if device == "cuda":
        def tests():
            res, passed = unit_tests()
            return f"`{res['summary']}`\n\n" + "\n".join(f"- {f}" for f in res["failures"]), passed
        section("Unit tier kernel tests on CUDA", tests)
        if os.environ.get("COMFYUI_PATH"):
            def flow():
                row, passed = workflow()
                return table([row]), passed
            section("Example workflow 1 on the GPU", flow)
        else:
            sections.append("## Example workflow 1 on the GPU\n\nskipped: COMFYUI_PATH is not set.\n")

    write(done=True)
    print(f"gpu_check: {'PASS' if ok else 'FAIL'}; wrote {out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
