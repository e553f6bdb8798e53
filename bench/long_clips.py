"""Long clips: peak memory and time per step against the clip's length, windowed and not.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.long_clips [--frames 16 64 128 240] [--depth full shallow]

Random-weight SD1.5 (bench/comfy_model.py; "shallow" is the 2-level layout), VRWKV Patch
Model's default (skip+mid, all levels), 64 px (latent 8x8), float32. Per case, in a fresh
process:
- sampling / inversion step: one UNet call on a CFG batch (2 videos of T frames), as the
  samplers make it (apply_model, with the MODEL's wrappers); windowed = VRWKV Context Windows
  (window 16, overlap 4, carry on). DDIM inversion at cfg 1 makes the same call on one video.
- tuning step: VRWKV Tune On Video (trainable vrwkv, gradient checkpointing), window 16 vs
  all frames; time per step = time of 2 steps - time of 1.
Peak memory above the loaded model during the timed work (bench/pipeline_cost.PeakMemory),
one case at a time, with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_, set
for the case processes) so that freed tensors leave the resident set and it follows the live
tensors rather than the allocator's retention. Writes bench/results/long_clips_<device>.md from every case measured so
far (kept in long_clips_<device>.json, so runs with different --frames add up; --fresh
starts over).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import machine_name
from .pipeline_cost import PeakMemory

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW, OVERLAP, SIZE = 16, 4, 8


def patched_model(depth):
    from .comfy_model import load_pack_in_comfy, random_sd15
    base = random_sd15(depth)
    load_pack_in_comfy()
    from vrwkv_editor.nodes.common import require_patch
    from vrwkv_editor.nodes.patch_model import apply_vrwkv
    from vrwkv_editor.vrwkv.config import PAPER
    from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
    with torch.inference_mode():
        model = apply_vrwkv(base, block_spec(unet_layout(base.get_model_object("diffusion_model")), PAPER))
    require_patch(model, "long_clips").blocks.set_norm_frames(WINDOW)     # as tuned on 16-frame windows
    return model


def sampling_case(depth, frames, windowed):
    model = patched_model(depth)
    import comfy.model_management
    from vrwkv_editor.nodes.windows import VRWKVContextWindows
    if windowed:
        model = VRWKVContextWindows().apply(model, WINDOW, OVERLAP, True)[0]
    comfy.model_management.load_models_gpu([model])
    device = model.load_device
    apply = model.model.apply_model

    def inputs(t):
        """The sampler's inputs for 2 videos of t frames (made before the step is measured)."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2 * t, 4, SIZE, SIZE, generator=g).to(device)
        sigma = torch.full((2 * t,), 1.0, device=device)
        c = {"c_crossattn": torch.randn(2, 77, 768, generator=g).to(device).repeat_interleave(t, 0),
             "transformer_options": {**model.model_options["transformer_options"], "cond_or_uncond": [1, 0],
                                     "wrappers": model.wrappers}}       # the windows, as a sampler passes them
        return {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": [1, 0]}

    def call(args):
        with torch.inference_mode():
            t0 = time.perf_counter()
            apply(args["input"], args["timestep"], **args["c"])
            return time.perf_counter() - t0

    call(inputs(WINDOW))                                     # warm-up
    args = inputs(frames)
    with PeakMemory() as memory:
        seconds = call(args)
    return {"step_s": seconds, "above_bytes": memory.above}


def tuning_case(depth, frames, windowed):
    model = patched_model(depth)
    from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
    from vrwkv_editor.nodes.common import require_patch
    require_patch(model, "long_clips").blocks.spec.pop("norm_frames")
    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(frames, 4, SIZE, SIZE, generator=g)}
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    node = VRWKVTuneOnVideo()

    def run(n):
        t0 = time.perf_counter()
        with torch.inference_mode():
            node.tune(model, latent, cond, n, 3e-5, 0, "vrwkv", True, "auto", window=WINDOW if windowed else 0)
        return time.perf_counter() - t0

    run(1)                                                   # warm-up
    with PeakMemory() as memory:
        one, two = run(1), run(2)
    return {"step_s": two - one, "above_bytes": memory.above}


CASES = {"sampling": sampling_case, "tuning": tuning_case}


def write_results(rows: dict, args, device: str) -> None:
    lines = [f"# Long clips: memory and time per step against frames, {machine_name(device)}", "",
             f"Random-weight SD1.5 UNet, float32, 64x64 px (latent 8x8), VRWKV skip+mid at all levels. Windowed: "
             f"VRWKV Context Windows (window {WINDOW}, overlap {OVERLAP}, carry on) for a sampling/inversion step "
             f"(one UNet call on a CFG batch: 2 videos of T frames; inversion at cfg 1 is one video); VRWKV Tune "
             f"On Video with window {WINDOW} for a tuning step (gradient checkpointing, trainable vrwkv). Peak "
             "resident memory above the loaded model and the step's inputs (the latents and prompt embeddings of "
             "every frame) during the step (sampled every 5 ms), one case per fresh process. Times come from a 2-core machine shared with other jobs: only the ratios within one "
             "table are meaningful, and those only roughly. `python -m bench.long_clips` (COMFYUI_PATH set).", ""]
    if args.note:
        lines += [args.note, ""]
    for depth in args.depth:
        for op in args.ops:
            done = [f for f in args.frames if (depth, op, f, True) in rows]
            if not done:
                continue
            ref = rows[(depth, op, done[0], True)]
            lines += [f"## {op} step, {'full SD1.5' if depth == 'full' else '2-level layout'}", "",
                      "| frames | windowed: s/step | windowed: GiB above model | windowed: memory / "
                      f"{done[0]} frames | whole clip: s/step | whole clip: GiB above model |", "|---|---|---|---|---|---|"]
            for f in done:
                w, whole = rows[(depth, op, f, True)], rows.get((depth, op, f, False))
                cells = ("not run", "not run") if whole is None else (f"{whole['step_s']:.2f}",
                                                                      f"{whole['above_bytes'] / 2**30:.3f}")
                lines.append(f"| {f} | {w['step_s']:.2f} | {w['above_bytes'] / 2**30:.3f} | "
                             f"{w['above_bytes'] / ref['above_bytes']:.2f}x | {cells[0]} | {cells[1]} |")
            lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"long_clips_{device}.md").write_text("\n".join(lines))
    (RESULTS / f"long_clips_{device}.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in rows.items()},
                                                                  indent=1))


def load_rows(device: str) -> dict:
    path = RESULTS / f"long_clips_{device}.json"
    if not path.is_file():
        return {}
    rows = {}
    for key, value in json.loads(path.read_text()).items():
        depth, op, frames, windowed = key.split("|")
        rows[(depth, op, int(frames), windowed == "True")] = value
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 128, 240])
    ap.add_argument("--depth", nargs="+", choices=["full", "shallow"], default=["full", "shallow"])
    ap.add_argument("--ops", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--whole-up-to", type=int, default=240,
                    help="run the unwindowed (whole clip) cases up to this many frames")
    ap.add_argument("--whole-tuning-up-to", type=int, default=64,
                    help="run whole-clip tuning up to this many frames (it is slow)")
    ap.add_argument("--fresh", action="store_true", help="forget the cases measured by earlier runs")
    ap.add_argument("--note", default="", help="a line added to the results (e.g. how busy the machine was)")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        depth, op, frames, windowed = args.one
        print(json.dumps(CASES[op](depth, int(frames), windowed == "1")))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = {} if args.fresh else load_rows(device)
    frames_seen = sorted({k[2] for k in rows} | set(args.frames))
    for depth in args.depth:
        for op in args.ops:
            limit = args.whole_tuning_up_to if op == "tuning" else args.whole_up_to
            for frames in args.frames:
                for windowed in (True, False) if frames <= limit else (True,):
                    if (depth, op, frames, windowed) in rows:          # measured by an earlier run
                        continue
                    cmd = [sys.executable, "-m", "bench.long_clips", "--one", depth, op, str(frames), str(int(windowed))]
                    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
                    if out.returncode != 0:
                        raise SystemExit(out.stderr[-3000:])
                    r = rows[(depth, op, frames, windowed)] = json.loads(out.stdout.strip().splitlines()[-1])
                    print(f"{depth:7s} {op:8s} T={frames:3d} {'windowed' if windowed else 'whole':8s}: "
                          f"{r['step_s']:.2f} s/step, {r['above_bytes'] / 2**30:.3f} GiB", flush=True)
                    write_results(rows, argparse.Namespace(**{**vars(args), "frames": frames_seen,
                                                              "depth": ["full", "shallow"],
                                                              "ops": list(CASES)}), device)


if __name__ == "__main__":
    main()
