"""Tuning cost: VRWKV-patched SD1.5 against two baselines in the same places with the same
channel mix: Tune-A-Video-style temporal attention (across frames at each spatial
position) and joint attention over all T*H*W tokens (Bi-WKV's receptive field at
quadratic cost). Side by side: time per tuning step and peak memory at several frame
counts, with ratios and the memory slope per frame.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.tuning_cost [--frames 8 16 32] [--size 8] [--depth shallow]

Each case runs VRWKV Tune On Video itself (gradient checkpointing on, vrwkv parameters)
in a fresh process, after a warm-up run: time per step = (time of 1 + N steps - time of
1 step) / N, so loading and set-up cancel out; peak
memory = peak resident (CPU) or allocated (CUDA) memory of the run. Writes
bench/results/tuning_cost_<device>.md.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import machine_name

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("vrwkv", "temporal-attention", "joint-attention")


def one_case(method, frames, size, depth, steps):
    from .comfy_model import load_pack_in_comfy, random_sd15
    base = random_sd15(depth)
    load_pack_in_comfy()
    from vrwkv_editor.nodes.patch_model import apply_vrwkv
    from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
    from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
    from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch
    from .baselines import JointAttentionBlock, TemporalAttentionBlock

    spec = block_spec(unet_layout(base.get_model_object("diffusion_model")), "skip+mid", 0)
    with torch.inference_mode():
        if method == "vrwkv":
            model = apply_vrwkv(base, spec)
        else:
            model = base.clone()
            block = TemporalAttentionBlock if method == "temporal-attention" else JointAttentionBlock
            model.set_model_output_block_patch(VRWKVPatch(VRWKVBlocks(spec, block=block)))
        g = torch.Generator().manual_seed(0)
        latent = {"samples": torch.randn(frames, 4, size, size, generator=g)}
        cond = [[torch.randn(1, 77, 768, generator=g), {}]]
        node = VRWKVTuneOnVideo()
        cuda = torch.cuda.is_available()
        node.tune(model, latent, cond, 1, 3e-5, 0, "vrwkv", True, "auto")   # warm-up: loading, first calls
        times = []
        for n in (1, 1 + steps):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            node.tune(model, latent, cond, n, 3e-5, 0, "vrwkv", True, "auto")
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() for p in model.model_options["transformer_options"]["patches"]["output_block_patch"][0].blocks.parameters())
    return {"step_s": (times[1] - times[0]) / steps, "peak_bytes": peak, "params": params}


def fit_slope(xs, ys):
    n = len(xs)
    xm, ym = sum(xs) / n, sum(ys) / n
    return sum((x - xm) * (y - ym) for x, y in zip(xs, ys)) / sum((x - xm) ** 2 for x in xs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--size", type=int, default=8, help="latent size (pixels / 8)")
    ap.add_argument("--depth", choices=["shallow", "full"], default="shallow",
                    help="UNet depth: full SD1.5, or the shallow SD1.5-layout UNet (4 levels fewer blocks)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_case(args.one[0], int(args.one[1]), args.size, args.depth, args.steps)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = {}
    for frames in args.frames:
        for method in METHODS:
            cmd = [sys.executable, "-m", "bench.tuning_cost", "--one", method, str(frames), "--size", str(args.size),
                   "--depth", args.depth, "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            rows[(method, frames)] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[(method, frames)]
            print(f"{method:20s} T={frames:3d}: {r['step_s']:.3f} s/step, peak {r['peak_bytes'] / 2**30:.2f} GiB", flush=True)
    lines = [f"# Tuning cost, VRWKV vs temporal and joint attention: {machine_name(device)}", "",
             f"SD1.5 UNet ({args.depth}), random weights, latent {args.size}x{args.size} "
             f"({args.size * 8}x{args.size * 8} px), placement skip+mid at all levels for all three, gradient "
             "checkpointing on, VRWKV Tune On Video's own loop. Peak memory is the whole process "
             "(UNet weights included).", "",
             "Added parameters: " + ", ".join(f"{m} {rows[(m, args.frames[0])]['params'] / 1e6:.1f} M" for m in METHODS)
             + ".", "",
             "| frames | method | s/step | peak GiB | time / vrwkv | memory / vrwkv |", "|---|---|---|---|---|---|"]
    for frames in args.frames:
        ref = rows[("vrwkv", frames)]
        for m in METHODS:
            r = rows[(m, frames)]
            lines.append(f"| {frames} | {m} | {r['step_s']:.3f} | {r['peak_bytes'] / 2**30:.2f} | "
                         f"{r['step_s'] / ref['step_s']:.2f}x | {r['peak_bytes'] / ref['peak_bytes']:.2f}x |")
    lines += ["", "Memory slope (MiB per extra frame, least squares):"]
    for method in METHODS if len(args.frames) > 1 else ():
        slope = fit_slope(args.frames, [rows[(method, f)]["peak_bytes"] / 2**20 for f in args.frames])
        lines.append(f"- {method}: {slope:.1f} MiB/frame")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"tuning_cost_{device}_{args.depth}_{args.size}.md").write_text(text)


if __name__ == "__main__":
    main()
