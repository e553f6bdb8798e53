"""Edit quality on the toy world: per-frame editing, Tune-A-Video and VRWKV (as shipped and
ablated) side by side on the same clips, edits and seeds, through the pack's own pipeline
(toyworld/pipeline.py) on the committed toy model.

    python -m bench.edit_quality [--quick]

For every clip, method and seed: patch, tune on the clip with its source prompt, DDIM-invert
it, sample each edit prompt (and the source prompt at cfg 1, the reconstruction). Measured
on each edited clip: edit fidelity (share of frames, among those where the source object is
whole in the frame, whose detected colour and shape are the edit's), attribute consistency
(share of neighbouring frame pairs whose detected colour and shape agree: how a per-frame
edit flickers in this world), motion fidelity (the detected centroid track against the
source's, pixels; the optical-flow end-point error against the source's flow), temporal
coherence (optical-flow warp error and flicker between consecutive frames; the source's own
figures are the reference), reconstruction PSNR, and how far tuning moved the model (the
relative change of its denoised source clip against the plain model's).
Writes bench/results/quality_<machine>.md (after every clip x seed unit, so a cut-off run
keeps what it finished) and the picture strip bench/results/quality_strip.png.
"""

import argparse
import multiprocessing
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import load_pack
from toyworld.fidelity import (as_image_batch, attribute_consistency, detections, edit_fidelity, track,
                                whole_in_frame)
from toyworld.model import WEIGHTS, load_model
from toyworld.pipeline import Method, Settings, edit
from toyworld.world import Spec, make_clip

load_pack()
from vrwkv_editor.vrwkv import metrics  # noqa: E402
from vrwkv_editor.vrwkv.config import DEFAULT, PAPER  # noqa: E402
from vrwkv_editor.vrwkv.tuning import BLOCK_LR_MULTIPLIER, TEMPORAL_LR_MULTIPLIER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED_LR = 3e-5          # VRWKV Tune On Video's default learning rate, and Tune-A-Video's recipe
TUNED_LR = 1e-3            # Tune-A-Video at a rate where its layers move as far as VRWKV's blocks
TUNED = f"lr {TUNED_LR:g}"
METHODS = [
    Method("per-frame (no tuning)", "plain"),
    Method("Tune-A-Video", "tav", lr=SHIPPED_LR),
    Method(f"Tune-A-Video, {TUNED}", "tav", lr=TUNED_LR),
    Method("VRWKV as shipped", "vrwkv", lr=SHIPPED_LR),
    Method("VRWKV, blocks at the recipe's lr (x1)", "vrwkv", lr=SHIPPED_LR, block_lr_multiplier=1.0),
    Method("VRWKV, the paper's block", "vrwkv", lr=SHIPPED_LR, config=PAPER),
    Method("VRWKV, temporal mix off (mu = 1)", "vrwkv", lr=SHIPPED_LR, freeze_mu=True),
    Method("VRWKV, decay scaled per frame", "vrwkv", lr=SHIPPED_LR, decay_scaling="frame"),
    Method("VRWKV, decay not scaled", "vrwkv", lr=SHIPPED_LR, decay_scaling="none"),
    Method("VRWKV, placement skip", "vrwkv", lr=SHIPPED_LR, config=DEFAULT.replace(placement="skip")),
    Method("VRWKV, placement mid", "vrwkv", lr=SHIPPED_LR, config=DEFAULT.replace(placement="mid")),
    Method("VRWKV, half resolution and below", "vrwkv", lr=SHIPPED_LR, config=DEFAULT.replace(min_level=1)),
]
QUICK_METHODS = [METHODS[0], METHODS[1], METHODS[3]]
# (path kind, object, path seed, edits as (colour, shape))
CLIPS = [
    ("zigzag", Spec("red", "circle", "large", 0, 0), 1, [("blue", "circle"), ("red", "square")]),
    ("curved", Spec("yellow", "circle", "large", 0, 0), 3, [("blue", "circle"), ("yellow", "square")]),
    ("speed", Spec("blue", "square", "large", 0, 0), 4, [("red", "square"), ("blue", "circle")]),
    ("exit", Spec("green", "square", "large", 0, 0), 2, [("yellow", "square"), ("green", "circle")]),
]
COLUMNS = [  # (key, header, format)
    ("fidelity", "edit fidelity ↑", "{:.2f}"),
    ("consistency", "attribute consistency ↑", "{:.2f}"),
    ("track_px", "track error px ↓", "{:.2f}"),
    ("flow_epe", "flow EPE vs source px ↓", "{:.3f}"),
    ("warp", "warp error ↓", "{:.4f}"),
    ("flicker", "flicker ↓", "{:.4f}"),
    ("recon_psnr", "reconstruction PSNR dB ↑", "{:.1f}"),
    ("moved", "output change", "{:.1e}"),
    ("tune_s", "tuning s", "{:.0f}"),
]


def prompt(size: str, colour: str, shape: str) -> str:
    return f"a {size} {colour} {shape}"


def measure(edited: torch.Tensor, source: torch.Tensor, colour: str, shape: str, source_found: list) -> dict:
    found, whole = detections(edited), whole_in_frame(source_found)
    coherence = metrics.coherence_report(as_image_batch(edited), as_image_batch(source)).means()
    return {
        "fidelity": edit_fidelity(found, colour, shape, whole),
        "consistency": attribute_consistency(found, whole),
        "track_px": metrics.track_error(track(found), track(source_found))[0],
        "flow_epe": coherence["motion_epe"],
        "warp": coherence["warp_error"],
        "flicker": coherence["flicker"],
    }


def source_reference(clips: list) -> dict:
    """Warp error and flicker of the source clips themselves: the level of a coherent clip."""
    means = [metrics.coherence_report(as_image_batch(frames)).means() for frames in clips]
    return {"warp": [m["warp_error"] for m in means], "flicker": [m["flicker"] for m in means]}


def fmt(values, pattern) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    text = pattern.format(np.mean(values))
    return text + " ± " + pattern.format(np.std(values)) if len(values) > 1 else text


def run_unit(job: tuple) -> tuple:
    """One clip and one seed through every method (per-frame editing, which draws nothing at
    random, only with the first seed): (rows, the source clip, strip entries of this unit)."""
    clip_index, seed, first_seed, methods, n_edits, settings, frames, weights = job
    torch.set_num_threads(1)
    model, _ = load_model(weights)
    kind, spec, path_seed, edits = CLIPS[clip_index]
    edits = edits[:n_edits]
    clip, _ = make_clip(kind, frames, spec, path_seed)
    source_found = detections(clip)
    source_prompt = prompt(spec.size, spec.colour, spec.shape)
    prompts = [prompt(spec.size, c, s) for c, s in edits]
    rows, strip = [], {}
    for method in methods:
        if method.kind == "plain" and seed != first_seed:
            continue
        start = time.perf_counter()
        out = edit(model, method, clip, source_prompt, prompts, replace(settings, seed=seed))
        recon = metrics.psnr(as_image_batch(out["reconstruction"]), as_image_batch(clip))
        for (c, s), p in zip(edits, prompts):
            row = measure(out["edits"][p], clip, c, s, source_found)
            row.update(method=method.name, recon_psnr=recon, tune_s=out["tune_s"], moved=out["moved"], clip=kind,
                       edit=p, seed=seed)
            rows.append(row)
        if method.name in STRIP_ROWS:
            strip[method.name] = (out["edits"][prompts[0]], prompts[0])
        print(f"{kind:7s} seed {seed} {method.name:48s} "
              + ", ".join(f"{r['edit']}: fid {r['fidelity']:.2f} cons {r['consistency']:.2f} "
                          f"track {r['track_px']:.2f}" for r in rows[-len(edits):])
              + f", moved {out['moved']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows, (clip, source_prompt), strip


def run(quick: bool, seeds: list, settings: Settings, frames: int, n_clips: int = len(CLIPS), weights=WEIGHTS,
        jobs: int = 1):
    """Every clip x seed unit, `jobs` of them at once in worker processes of one torch thread
    each. Yields (rows by method, source reference, strip, units done, units) after each unit,
    so that a cut-off run still leaves the units it finished."""
    methods = QUICK_METHODS if quick else METHODS
    units = [(c, seed, seeds[0], methods, 1 if quick else 2, settings, frames, weights)
             for seed in seeds for c in range(1 if quick else n_clips)]   # every clip's first seed first
    done = {}
    with multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else _InProcess() as pool:
        for i, result in pool.imap_unordered(_indexed_unit, list(enumerate(units))):
            done[i] = result
            results = [done[k] for k in sorted(done)]
            rows = {m.name: [r for unit_rows, _, _ in results for r in unit_rows if r["method"] == m.name]
                    for m in methods}
            sources = [done[k][1][0] for k in sorted(done) if units[k][1] == seeds[0]]
            first = results[0]
            yield rows, source_reference(sources), {"source": first[1]} | first[2], len(done), len(units)


def _indexed_unit(indexed_job):
    i, job = indexed_job
    return i, run_unit(job)


class _InProcess:
    """The Pool interface run() uses, in this process (one job: quick mode, tests)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, jobs):
        return map(fn, jobs)


STRIP_ROWS = ("per-frame (no tuning)", "Tune-A-Video", "VRWKV as shipped", "VRWKV, the paper's block")


def write_strip(strip: dict, path: Path, scale: int = 4) -> None:
    """Rows: source, then each method's edit of the same clip; every frame, nearest-neighbour upscaled."""
    source, source_prompt = strip["source"]
    rows = [("source: " + source_prompt, source)] + [
        (f"{name}: {strip[name][1]}", strip[name][0]) for name in STRIP_ROWS if name in strip]
    t, _, h, w = source.shape
    label_h = 14
    canvas = Image.new("RGB", (t * w * scale, len(rows) * (h * scale + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(rows):
        top = r * (h * scale + label_h)
        draw.text((2, top + 1), label, fill="black")
        pixels = (as_image_batch(frames) * 255).round().astype(np.uint8)
        for i, frame in enumerate(pixels):
            tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (i * w * scale, top + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(path)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def table(rows: dict, reference: dict, settings: Settings, frames: int, seeds: list, meta: dict, quick: bool,
          minutes: float, jobs: int, units: tuple) -> str:
    lines = [
        "# Edit quality on the toy world" + (" (quick mode)" if quick else ""),
        "",
        *([f"**Partial: {units[0]} of {units[1]} clip x seed units done.**", ""] if units[0] < units[1] else []),
        f"Machine: {cpu_model()}, CPU, {jobs} worker process(es) of one torch thread each. Wall time "
        f"{minutes:.0f} min.",
        "",
        f"Model: toyworld/weights/toy_unet.safetensors (step {meta.get('step')}, adherence history "
        f"{meta.get('history')}).",
        f"Settings: {frames} frames of 32x32; tuning {settings.tune_steps} steps (reduced from the node's 300), "
        f"DDIM {settings.ddim_steps} steps for inversion (source prompt, cfg 1, refine 0) and sampling (cfg "
        f"{settings.cfg}, eta 0); seeds {seeds} (tuning noise and timesteps; per-frame editing has no random "
        "draw, so one seed). Gradient checkpointing off (it changes time and memory, not results). "
        f"VRWKV as shipped: VRWKV Patch Model's default ({DEFAULT}), decay scaled by the clip's length, lr {SHIPPED_LR} "
        f"(blocks x{BLOCK_LR_MULTIPLIER:g}, temporal parameters x{TEMPORAL_LR_MULTIPLIER:g}: the nodes' defaults); "
        "the other VRWKV rows change one of these (the paper's block: channel mix 4x, full projections, "
        f"unfused). Tune-A-Video: baselines/tune_a_video.py, its recipe's lr {SHIPPED_LR}, and at {TUNED_LR:g}. "
        "Output change: relative change of the denoised source clip (training step 500) made by the "
        "method's patched, tuned model against the plain one.",
        "",
        "Each cell: mean ± standard deviation over clips x edits x seeds "
        f"({', '.join(dict.fromkeys(r['clip'] for v in rows.values() for r in v))}; colour and shape edits).",
        "",
        "| method | runs | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, rs in rows.items():
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(fmt([r[k] for r in rs], f) for k, _, f in COLUMNS) + " |")
    lines.append(f"| source clips (reference) | {len(reference['warp'])} | | 1.00 | | | "
                 f"{fmt(reference['warp'], '{:.4f}')} | {fmt(reference['flicker'], '{:.4f}')} | | | |")
    per_clip = [c for c in COLUMNS if c[0] in ("fidelity", "consistency", "track_px", "warp")]
    lines += ["", "Per clip and edit (mean over seeds):", "",
              "| method | clip | edit | " + " | ".join(h for _, h, _ in per_clip) + " |",
              "|---|---|---|" + "---|" * len(per_clip)]
    for name, rs in rows.items():
        for key in dict.fromkeys((r["clip"], r["edit"]) for r in rs):
            sel = [r for r in rs if (r["clip"], r["edit"]) == key]
            lines.append(f"| {name} | {key[0]} | {key[1]} | "
                         + " | ".join(fmt([r[k] for r in sel], f) for k, _, f in per_clip) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one clip, one edit, one seed, three methods")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=2, help=f"how many of the {len(CLIPS)} clips")
    p.add_argument("--seeds", type=int, nargs="+", default=[33, 34])
    p.add_argument("--tune-steps", type=int, default=60)
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--jobs", type=int, default=2, help="clip x seed units run at once, one process and one "
                   "torch thread each")
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="toy model file")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/quality_<machine>.md)")
    p.add_argument("--strip", type=Path, default=None, help="picture strip (default bench/results/quality_strip.png)")
    args = p.parse_args(argv)
    if not 1 <= args.clips <= len(CLIPS):
        raise ValueError(f"--clips must be within 1..{len(CLIPS)}, got {args.clips}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    seeds = args.seeds[:1] if args.quick else args.seeds
    settings = Settings(tune_steps=args.tune_steps, ddim_steps=args.ddim_steps, cfg=args.cfg)
    start = time.perf_counter()
    jobs = 1 if args.quick else args.jobs
    _, meta = load_model(args.weights)
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"quality_cpu{suffix}.md"
    strip_path = args.strip or RESULTS / f"quality_strip{suffix}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    for rows, reference, strip, done, total in run(args.quick, seeds, settings, args.frames, args.clips,
                                                   args.weights, jobs):
        minutes = (time.perf_counter() - start) / 60
        text = table(rows, reference, settings, args.frames, seeds, meta, args.quick, minutes, jobs, (done, total))
        tmp = out.with_name("." + out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        write_strip(strip, strip_path)
        print(f"{done}/{total} clip x seed units done: wrote {out} and {strip_path}", flush=True)
    print(text)


if __name__ == "__main__":
    main()
