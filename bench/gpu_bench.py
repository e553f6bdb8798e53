"""The GPU bench: the GPU check, then what issue 23 asks to measure on a GPU, in one run.

    bash scripts/gpu_bench.sh              # CUDA, about 7 minutes on one H100; writes bench/results/
    bash scripts/gpu_bench.sh --dry-run    # CPU, Triton's interpreter, tiny sizes (CI)

Sections, in order of priority (each writes its results as it goes; a section that would
start past --budget-s is skipped and says so):
1. checks: bench/gpu_check.py (kernels against float64, real-size blocks, the unit tier's
   kernel tests on CUDA, example workflow 1 when COMFYUI_PATH is set), its timing table
   replaced by section 2;
2. kernel: Bi-WKV forward + backward at 98k and 524k tokens x 320 channels (two sequences,
   the CFG batch), fp32 and bf16, as bandwidth against the measured copy bandwidth (goal:
   >= 40%, bf16 faster than fp32), with the default tile configuration;
3. pipeline bf16: bench.pipeline_cost in bf16 (tuning, inversion and sampling steps of
   plain, Tune-A-Video as built and as shipped, the VRWKV default and the paper's block at
   16 frames; Tune-A-Video and the default at 24 and 32; the long clip: 120 frames in
   windows of 16), and one profiled tuning step of each configuration;
4. sampling fp16: sampling side by side on an fp16 UNet (plain, Tune-A-Video, VRWKV with
   fp32 blocks and with half_precision_sampling);
5. pipeline fp32: the tuning step of the same configurations at 16 frames in fp32;
6. minutes per edit: bench.edit_minutes from section 3's figures;
7. kernel alternatives: section 2 for other tile configurations, in bf16.
Needs COMFYUI_PATH for sections 3-6 (skipped without it), and ComfyUI's requirements in
COMFYUI_PYTHON (default: this Python). Exits 1 when the checks fail.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from . import load_pack, machine_name  # noqa: E402
from .biwkv_scaling import copy_bandwidth, min_bytes  # noqa: E402
from .gpu_check import rel_err, slug, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GOAL = 0.40                       # forward + backward bandwidth against the copy bandwidth
GOAL_SHAPES = [(2, 98304, 320), (2, 524288, 320)]
DRY_SHAPES = [(1, 33, 5)]
# Tile configurations timed beside the default (kernels/triton_chunked.py Config fields):
# the in-chunk sums as a scan instead of matmuls, with wider tiles (all compile for sm_80 and
# sm_90 without register spills).
ALTERNATIVES = [{"dot": False, "bt": 64, "bc": 32, "warps": 8}, {"dot": False, "bt": 32, "bc": 32, "warps": 8}]
# Seconds each section takes on one H100, estimated from the first H100 run (bench/results/
# gpu_nvidia_h100_80gb_hbm3.md, pipeline_cost_cuda_full_512px.md) and the steps each times.
ESTIMATES = {"checks": 150, "kernel": 15, "pipeline bf16": 140, "sampling fp16": 35, "pipeline fp32": 50,
             "minutes per edit": 3, "kernel alternatives": 35}


def pipeline_plan(dry: bool) -> dict:
    """bench.pipeline_cost arguments per pipeline section."""
    if dry:
        common = ["--depth", "shallow", "--size", "2", "--repeats", "1", "--in-process"]
        return {"pipeline bf16": common + ["--precision", "bf16", "--case", "plain:2", "tune-a-video:2", "default:2",
                                           "default:3", "default:10:6", "--profile"],
                "sampling fp16": common + ["--precision", "fp32", "--frames", "2", "--sampling-side-by-side",
                                           "--configs", "plain", "tune-a-video", "default", "default-half"],
                "pipeline fp32": common + ["--precision", "fp32", "--phases", "tune", "--case", "plain:2", "default:2"]}
    common = ["--depth", "full", "--size", "64", "--repeats", "3"]
    return {"pipeline bf16": common + ["--precision", "bf16", "--profile", "--case",
                                       *[f"{c}:16" for c in ("plain", "tune-a-video", "tune-a-video-shipped",
                                                              "default", "paper")],
                                       "tune-a-video:24", "default:24", "tune-a-video:32", "default:32",
                                       "default:120:16:1"],
            "sampling fp16": common + ["--precision", "fp16", "--frames", "16", "--sampling-side-by-side",
                                       "--configs", "plain", "tune-a-video", "default", "default-half"],
            "pipeline fp32": common + ["--precision", "fp32", "--phases", "tune", "--case",
                                       *[f"{c}:16" for c in ("plain", "tune-a-video", "tune-a-video-shipped",
                                                              "default")]]}


def time_launchers(cfg, B, L, C, dtype, device, repeats):
    """(forward s, backward s) medians of the Triton launchers with tile configuration cfg."""
    from vrwkv_editor.kernels import triton_chunked as tc
    g = torch.Generator().manual_seed(0)
    k, v, gy = (torch.randn(B, L, C, generator=g).to(device, dtype) for _ in range(3))
    w, u = (torch.full((C,), 1.0 / L, device=device) for _ in range(2))
    fwd, bwd = [], []
    for i in range(repeats + 1):             # the first run compiles
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y, saved = tc.bi_wkv_fwd_triton(w, u, k, v, cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        tc.bi_wkv_bwd_triton(w, u, k, v, y, saved, gy, cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
    return sorted(fwd)[len(fwd) // 2], sorted(bwd)[len(bwd) // 2]


def config_error(cfg, device) -> float:
    """Largest error of y and the four gradients relative to the float64 torch backend, for
    tile configuration cfg on an input that crosses blocks and takes both in-chunk forms."""
    from vrwkv_editor.kernels import torch_scan
    from vrwkv_editor.kernels import triton_chunked as tc
    from vrwkv_editor.kernels.self_check import check_inputs
    w, u, k, v, gy = check_inputs(cfg, device, torch.float32)
    y, saved = tc.bi_wkv_fwd_triton(w, u, k, v, cfg)
    got = (y, *tc.bi_wkv_bwd_triton(w, u, k, v, y, saved, gy, cfg))
    w, u, k, v, gy = (t.double() for t in (w, u, k, v, gy))
    y_ref, saved = torch_scan.bi_wkv_fwd_torch(w, u, k, v)
    want = (y_ref, *torch_scan.bi_wkv_bwd_torch(w, u, k, v, y_ref, saved, gy))
    return max(rel_err(a, b) for a, b in zip(got, want))


def kernel_section(device, dry, out: Path, alternatives: bool) -> str:
    """Bandwidth of forward + backward against the copy bandwidth: the default tile
    configuration in fp32 and bf16, or the alternatives in bf16."""
    from vrwkv_editor.kernels import triton_chunked as tc
    bandwidth = copy_bandwidth() if device == "cuda" else None
    default = tc.default_config()
    configs = [("default", default)] if not alternatives else [
        (", ".join(f"{k}={v}" for k, v in alt.items()), default._replace(**alt) if not dry else default._replace(
            dot=alt["dot"])) for alt in ALTERNATIVES]
    dtypes = [("bf16", torch.bfloat16)] if alternatives else [("fp32", torch.float32), ("bf16", torch.bfloat16)]
    rows = []
    for name, cfg in configs:
        try:
            err = config_error(cfg, device)
        except Exception as e:  # a configuration that fails to compile is a result
            message = str(e).splitlines()[0][:120] if str(e) else ""
            rows.append({"tiles": name, "error": f"{type(e).__name__}: {message}"})
            continue
        for B, L, C in DRY_SHAPES if dry else GOAL_SHAPES:
            for dt, dtype in dtypes:
                f, b = time_launchers(cfg, B, L, C, dtype, device, 1 if dry else 5)
                gbs = min_bytes(B, L, C, dtype) / (f + b)
                share = gbs / bandwidth if bandwidth else None
                rows.append({"tiles": name, "shape": (B, L, C), "dtype": dt, "fwd_ms": f"{f * 1e3:.2f}",
                             "bwd_ms": f"{b * 1e3:.2f}", "GB/s": f"{gbs / 1e9:.0f}",
                             "of copy": f"{share:.0%}" if share else "-",
                             "goal": ("met" if share >= GOAL else "not met") if share else "-",
                             "max error vs float64": f"{err:.1e}"})
                print(f"  {rows[-1]}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    head = [f"# Bi-WKV kernel bandwidth: {machine_name(device)}", "",
            f"Forward + backward of the Triton launchers (median of {1 if dry else 5} after a compiling run); GB/s "
            "is the operator's least traffic (read k, v, write y; read k, v, gy, write gk, gv) per second, "
            + (f"against the measured copy bandwidth of {bandwidth / 1e9:.0f} GB/s; " if bandwidth else "")
            + f"goal: >= {GOAL:.0%} at 98k and 524k tokens x 320 channels, bf16 faster than fp32. Max error: y and "
            "the four gradients against the float64 torch backend on the self-check input (both in-chunk forms). "
            f"Default tiles: {default}.", ""]
    text = "\n".join(head) + "\n" + table(rows) + "\n"
    out.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton's interpreter, tiny sizes")
    ap.add_argument("--results", type=Path,
                    help="folder for the results (default bench/results; dry run: a temp folder)")
    ap.add_argument("--budget-s", type=float, default=420,
                    help="skip a section when its estimated end passes this many seconds")
    ap.add_argument("--only", nargs="+", choices=list(ESTIMATES), help="run only these sections (a rerun)")
    args = ap.parse_args(argv)
    load_pack()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device; run with --dry-run to check the script on the CPU")
    if args.dry_run:
        from tools import fast_interpreter
        fast_interpreter.install()
    results = args.results or (Path(tempfile.mkdtemp(prefix="gpu_bench_")) if args.dry_run else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    name = "cpu_dry_run" if args.dry_run else slug(torch.cuda.get_device_name())
    summary_path = results / f"gpu_bench_{name}.md"
    started, ok, log = time.perf_counter(), True, []
    comfy_python = os.environ.get("COMFYUI_PYTHON", sys.executable)

    def write():
        lines = [f"# GPU bench: {machine_name(device)}", "",
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}; "
                 f"`bash scripts/gpu_bench.sh{' --dry-run' if args.dry_run else ''}`; "
                 f"{time.perf_counter() - started:.0f} s so far; results in {results}.", "",
                 "| section | seconds | result |", "|---|---|---|"] + log
        summary_path.write_text("\n".join(lines) + "\n")

    def section(title, fn):
        nonlocal ok
        if args.only and title not in args.only:
            return
        elapsed = time.perf_counter() - started
        if not args.dry_run and elapsed + ESTIMATES[title] > args.budget_s:
            log.append(f"| {title} | 0 | skipped: {elapsed:.0f} s spent, about {ESTIMATES[title]} s more would "
                       f"pass the {args.budget_s:.0f} s budget |")
            write()
            return
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        try:
            result, passed = fn()
        except Exception:
            result, passed = "error: " + traceback.format_exc().strip().splitlines()[-1][:200], False
        if title == "checks":
            ok &= passed
        log.append(f"| {title} | {time.perf_counter() - t0:.0f} | {result} |")
        write()

    def run(cmd, python=sys.executable, timeout=600):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([python, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        sys.stdout.write(proc.stdout[-3000:])
        return proc

    def checks():
        out = results / f"gpu_{name}.md"
        dry = ["--dry-run"] if args.dry_run else []
        proc = run(["-m", "bench.gpu_check", "--no-timing", "--out", str(out), *dry])
        if proc.returncode == 0:
            return f"PASS ({out.name})", True
        return f"FAIL, exit {proc.returncode} ({out.name}): {(proc.stderr or proc.stdout).strip()[-300:]}", False

    def kernel(alternatives=False):
        def go():
            out = results / f"biwkv_kernel{'_alternatives' if alternatives else ''}_{name}.md"
            text = kernel_section(device, args.dry_run, out, alternatives)
            met = text.count("| met |")
            return f"{out.name}: goal met in {met} of {met + text.count('| not met |')} rows", True
        return go

    def pipeline(title):
        def go():
            if not os.environ.get("COMFYUI_PATH"):
                return "skipped: COMFYUI_PATH is not set", True
            remaining = max(60.0, args.budget_s + 120 - (time.perf_counter() - started))
            proc = run(["-m", "bench.pipeline_cost", "--results", str(results), *pipeline_plan(args.dry_run)[title]],
                       python=comfy_python, timeout=remaining)
            if proc.returncode != 0:
                return f"FAILED: {(proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}", False
            return "pipeline_cost_*.md updated", True
        return go

    def minutes():
        if not os.environ.get("COMFYUI_PATH"):
            return "skipped: COMFYUI_PATH is not set", True
        size = "2" if args.dry_run else "64"
        proc = run(["-m", "bench.edit_minutes", "--precision", "bf16", "--size", size, "--results", str(results),
                    "--device", device], python=comfy_python)
        passed = proc.returncode == 0
        return ("edit_minutes written" if passed else f"FAILED: {proc.stderr[-200:]}"), passed

    section("checks", checks)
    section("kernel", kernel())
    for title in ("pipeline bf16", "sampling fp16", "pipeline fp32"):
        section(title, pipeline(title))
    section("minutes per edit", minutes)
    section("kernel alternatives", kernel(alternatives=True))
    write()
    print(f"gpu_bench: {'PASS' if ok else 'FAIL'}; wrote {summary_path}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
