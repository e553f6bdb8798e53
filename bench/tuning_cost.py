"""Tuning cost: one tuning step of VRWKV (as shipped) against Tune-A-Video, the peer
(bench/tune_a_video.py: sparse-causal attn1, a temporal attention in every transformer
block, trainable attn1/attn2 to_q + the temporal attentions), and against the plain UNet
(no patch; its attn1/attn2 to_q trained: forward and backward through the UNet alone).

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.tuning_cost [--frames 8 16] [--size 16] [--depth shallow]

All three run the pack's loop (vrwkv/tuning.py inside ComfyUI's guider), gradient
checkpointing on (each ResBlock and SpatialTransformer recomputed; VRWKV's blocks too), in
the UNet's float32. VRWKV is VRWKV Tune On Video itself with its defaults (skip+mid at all
levels, trainable vrwkv). Each case runs in a fresh process, after a warm-up run: time per
step = (time of 1 + N steps - time of 1 step) / N, so loading and set-up cancel out; peak
memory above the loaded model = peak resident (CPU, sampled every 5 ms) or allocated
(CUDA) memory during the timed runs minus that before them. Writes
bench/results/tuning_cost_<device>_<depth>_<size>.md.
"""

import argparse
import ctypes
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from . import machine_name

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("tune-a-video", "vrwkv", "plain")
REFERENCE = "tune-a-video"


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator, or the resident set on the CPU."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()

    @staticmethod
    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)      # return freed heap, so the start is the live level
        except OSError:
            pass
        self.start = self.peak = self.resident()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.resident())
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.running = False
            self.thread.join()
        self.above = self.peak - self.start


def one_case(method, frames, size, depth, steps):
    from .comfy_model import load_pack_in_comfy, random_sd15
    base = random_sd15(depth)
    load_pack_in_comfy()
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(frames, 4, size, size, generator=g)
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]

    if method == "vrwkv":
        from vrwkv_editor.nodes.patch_model import apply_vrwkv
        from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
        from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
        with torch.inference_mode():
            model = apply_vrwkv(base, block_spec(unet_layout(base.get_model_object("diffusion_model")), "skip+mid", 0))
        node = VRWKVTuneOnVideo()
        patch = model.model_options["transformer_options"]["patches"]["output_block_patch"][0]
        trained = sum(p.numel() for p in patch.blocks.parameters())

        def run(n):
            with torch.inference_mode():
                node.tune(model, {"samples": latent}, cond, n, 3e-5, 0, "vrwkv", True, "auto")
    else:
        from .tune_a_video import query_trainer, tune_a_video_comfy, tune_in_comfy
        if method == "tune-a-video":
            _, trainer, params = tune_a_video_comfy(base, gradient_checkpointing=True)
        else:
            trainer, params = query_trainer(base, gradient_checkpointing=True)
        trained = sum(p.numel() for p in params)

        def run(n):
            tune_in_comfy(trainer, params, latent, cond, n)

    run(1)                                   # warm-up: loading, first calls
    times = []
    with PeakMemory() as memory:
        for n in (1, 1 + steps):
            t0 = time.perf_counter()
            run(n)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"step_s": (times[1] - times[0]) / steps, "above_bytes": memory.above, "params": trained}


def write_results(runs: dict, args, device: str) -> None:
    """The table of every frame count measured for all methods so far (rewritten after each
    run, so an interrupted benchmark keeps what it measured)."""
    frames_done = [f for f in args.frames if all((m, f) in runs for m in METHODS)]
    if not frames_done:
        return
    repeats = min(len(runs[(m, f)]) for m in METHODS for f in frames_done)
    rows = {key: {"step_s": min(r["step_s"] for r in rs), "slowest_s": max(r["step_s"] for r in rs),
                  "above_bytes": min(r["above_bytes"] for r in rs), "params": rs[0]["params"]}
            for key, rs in runs.items()}
    lines = [f"# Tuning cost, VRWKV vs Tune-A-Video vs the plain UNet: {machine_name(device)}", "",
             f"SD1.5 UNet ({args.depth}), random weights, float32, latent {args.size}x{args.size} "
             f"({args.size * 8}x{args.size * 8} px), one prompt, gradient checkpointing on for all, the pack's "
             f"tuning loop (AdamW); {args.steps} timed steps per run after a warm-up, {repeats} run(s) per "
             "case (methods interleaved): the fastest kept (slowest in brackets), memory the least of the runs. "
             "VRWKV: VRWKV Tune On Video as shipped (skip+mid at all levels, trainable vrwkv). Tune-A-Video: "
             "bench/tune_a_video.py (sparse-causal attn1, temporal attention in every transformer block; trains "
             "attn1/attn2 to_q + temporal attention). Plain: no patch, attn1/attn2 to_q trained. Memory: peak "
             "above the loaded model during the timed steps.", "",
             "Trained parameters: " + ", ".join(f"{m} {rows[(m, frames_done[0])]['params'] / 1e6:.1f} M"
                                                for m in METHODS) + ".", ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["| frames | method | s/step (slowest) | GiB above model | time / TAV | memory / TAV |",
              "|---|---|---|---|---|---|"]
    for frames in frames_done:
        ref = rows[(REFERENCE, frames)]
        for m in METHODS:
            r = rows[(m, frames)]
            lines.append(f"| {frames} | {m} | {r['step_s']:.2f} ({r['slowest_s']:.2f}) | "
                         f"{r['above_bytes'] / 2**30:.2f} | {r['step_s'] / ref['step_s']:.2f}x | "
                         f"{r['above_bytes'] / ref['above_bytes']:.2f}x |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"tuning_cost_{device}_{args.depth}_{args.size}.md").write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--size", type=int, default=16, help="latent size (pixels / 8)")
    ap.add_argument("--depth", choices=["shallow", "full"], default="shallow",
                    help="UNet depth: full SD1.5, or the 2-level SD1.5-layout UNet (one res block per level)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per case")
    ap.add_argument("--repeats", type=int, default=2, help="runs per case; the table keeps the fastest")
    ap.add_argument("--note", default="", help="a line added to the results (e.g. how busy the machine was)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_case(args.one[0], int(args.one[1]), args.size, args.depth, args.steps)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = {}
    for repeat in range(args.repeats):           # methods interleaved, so a busy spell hits all alike
        for frames in args.frames:
            for method in METHODS:
                cmd = [sys.executable, "-m", "bench.tuning_cost", "--one", method, str(frames), "--size",
                       str(args.size), "--depth", args.depth, "--steps", str(args.steps)]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((method, frames), []).append(r)
                print(f"run {repeat + 1} {method:13s} T={frames:3d}: {r['step_s']:.3f} s/step, "
                      f"{r['above_bytes'] / 2**30:.2f} GiB above the model", flush=True)
                write_results(runs, args, device)


if __name__ == "__main__":
    main()
