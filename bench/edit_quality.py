"""Edit quality on the toy world: per-frame editing, Tune-A-Video and VRWKV (as shipped and
ablated) side by side on the same clips, edits and seeds, through the pack's own pipeline
(bench/toyworld/pipeline.py) on the committed toy model.

    python -m bench.edit_quality [--quick]

For every clip, method and seed: patch, tune on the clip with its source prompt, DDIM-invert
it, sample each edit prompt (and the source prompt at cfg 1, the reconstruction). Measured
on each edited clip: edit fidelity (share of frames, among those where the source object is
whole in the frame, whose detected colour and shape are the edit's), motion fidelity (the
detected centroid track against the source's, pixels; the optical-flow end-point error
against the source's flow), temporal coherence (optical-flow warp error and flicker between
consecutive frames; the source's own figures are the reference), and reconstruction PSNR.
Writes bench/results/quality_<machine>.md and the picture strip bench/results/quality_strip.png.
"""

import argparse
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import load_pack
from .toyworld.fidelity import as_image_batch, detections, edit_fidelity, track, whole_in_frame
from .toyworld.model import WEIGHTS, load_model
from .toyworld.pipeline import Method, Settings, edit
from .toyworld.world import Spec, make_clip

load_pack()
from vrwkv_editor.vrwkv import metrics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED_LR = 3e-5          # VRWKV Tune On Video's default learning rate
ABLATION_LR = 1e-3         # ablations at a rate where the blocks move within the reduced steps
METHODS = [
    Method("per-frame (no tuning)", "plain"),
    Method("Tune-A-Video", "tav", lr=SHIPPED_LR),
    Method("VRWKV as shipped", "vrwkv", lr=SHIPPED_LR),
    Method("VRWKV, lr 1e-3", "vrwkv", lr=ABLATION_LR),
    Method("VRWKV, lr 1e-3, temporal mix off (mu = 1)", "vrwkv", lr=ABLATION_LR, freeze_mu=True),
    Method("VRWKV, lr 1e-3, placement skip", "vrwkv", lr=ABLATION_LR, placement="skip"),
    Method("VRWKV, lr 1e-3, placement mid", "vrwkv", lr=ABLATION_LR, placement="mid"),
    Method("VRWKV, lr 1e-3, half resolution and below", "vrwkv", lr=ABLATION_LR, resolution="half and below"),
]
QUICK_METHODS = METHODS[:3]
# (path kind, object, path seed, edits as (colour, shape))
CLIPS = [
    ("zigzag", Spec("red", "circle", "large", 0, 0), 1, [("blue", "circle"), ("red", "square")]),
    ("exit", Spec("green", "square", "large", 0, 0), 2, [("yellow", "square"), ("green", "circle")]),
    ("curved", Spec("yellow", "circle", "large", 0, 0), 3, [("green", "circle"), ("yellow", "square")]),
    ("speed", Spec("blue", "square", "large", 0, 0), 4, [("red", "square"), ("blue", "circle")]),
]
COLUMNS = [  # (key, header, format)
    ("fidelity", "edit fidelity ↑", "{:.2f}"),
    ("track_px", "track error px ↓", "{:.2f}"),
    ("flow_epe", "flow EPE vs source px ↓", "{:.3f}"),
    ("warp", "warp error ↓", "{:.4f}"),
    ("flicker", "flicker ↓", "{:.4f}"),
    ("recon_psnr", "reconstruction PSNR dB ↑", "{:.1f}"),
    ("tune_s", "tuning s", "{:.0f}"),
]


def prompt(size: str, colour: str, shape: str) -> str:
    return f"a {size} {colour} {shape}"


def measure(edited: torch.Tensor, source: torch.Tensor, colour: str, shape: str, source_found: list) -> dict:
    found = detections(edited)
    coherence = metrics.coherence_report(as_image_batch(edited), as_image_batch(source)).means()
    return {
        "fidelity": edit_fidelity(found, colour, shape, whole_in_frame(source_found)),
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


def run(quick: bool, seeds: list, settings: Settings, frames: int, n_clips: int = len(CLIPS), weights=WEIGHTS,
        log=print):
    model, meta = load_model(weights)
    clips = CLIPS[:1] if quick else CLIPS[:n_clips]
    methods = QUICK_METHODS if quick else METHODS
    rows = {m.name: [] for m in methods}
    strip, sources = {}, []
    for kind, spec, path_seed, edits in clips:
        edits = edits[:1] if quick else edits
        clip, _ = make_clip(kind, frames, spec, path_seed)
        sources.append(clip)
        source_found = detections(clip)
        source_prompt = prompt(spec.size, spec.colour, spec.shape)
        prompts = [prompt(spec.size, c, s) for c, s in edits]
        for method in methods:
            for seed in seeds[:1] if method.kind == "plain" else seeds:   # no tuning: nothing is random
                start = time.perf_counter()
                out = edit(model, method, clip, source_prompt, prompts, Settings(**{**vars(settings), "seed": seed}))
                recon = metrics.psnr(as_image_batch(out["reconstruction"]), as_image_batch(clip))
                for (c, s), p in zip(edits, prompts):
                    row = measure(out["edits"][p], clip, c, s, source_found)
                    row.update(recon_psnr=recon, tune_s=out["tune_s"], clip=kind, edit=p, seed=seed)
                    rows[method.name].append(row)
                    if not strip.get(method.kind) and method.name in STRIP_ROWS:
                        strip[method.kind] = (clip, out["edits"][p], source_prompt, p)
                log(f"{kind:8s} {method.name:45s} seed {seed}: "
                    + ", ".join(f"{r['edit']}: fid {r['fidelity']:.2f} track {r['track_px']:.2f}"
                                for r in rows[method.name][-len(edits):])
                    + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return model, meta, rows, source_reference(sources), strip


STRIP_ROWS = ("per-frame (no tuning)", "Tune-A-Video", "VRWKV as shipped")


def write_strip(strip: dict, path: Path, scale: int = 4) -> None:
    """Rows: source, then each method's edit of the same clip; every frame, nearest-neighbour upscaled."""
    first = next(iter(strip.values()))
    rows = [("source: " + first[2], first[0])] + [
        (f"{name}: {strip[kind][3]}", strip[kind][1])
        for name, kind in zip(STRIP_ROWS, ("plain", "tav", "vrwkv")) if kind in strip]
    t, _, h, w = first[0].shape
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
          minutes: float) -> str:
    lines = [
        "# Edit quality on the toy world" + (" (quick mode)" if quick else ""),
        "",
        f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads, CPU. Wall time {minutes:.0f} min.",
        "",
        f"Model: bench/toyworld/weights/toy_unet.safetensors (step {meta.get('step')}, adherence history "
        f"{meta.get('history')}).",
        f"Settings: {frames} frames of 32x32; tuning {settings.tune_steps} steps (reduced from the node's 300), "
        f"DDIM {settings.ddim_steps} steps for inversion (source prompt, cfg 1, refine 0) and sampling (cfg "
        f"{settings.cfg}, eta 0); seeds {seeds} (tuning noise and timesteps; per-frame editing has no random "
        "draw, so one seed). Gradient checkpointing off (it changes time and memory, not results). "
        f"VRWKV as shipped: placement skip+mid, all levels, lr {SHIPPED_LR} (the nodes' defaults); ablations "
        f"at lr {ABLATION_LR}. Tune-A-Video: bench/tune_a_video.py, lr {SHIPPED_LR}.",
        "",
        "Each cell: mean ± standard deviation over clips x edits x seeds "
        f"({', '.join(sorted({r['clip'] for v in rows.values() for r in v}))}; colour and shape edits).",
        "",
        "| method | runs | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, rs in rows.items():
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(fmt([r[k] for r in rs], f) for k, _, f in COLUMNS) + " |")
    lines.append(f"| source clips (reference) | {len(reference['warp'])} | | | | "
                 f"{fmt(reference['warp'], '{:.4f}')} | {fmt(reference['flicker'], '{:.4f}')} | | |")
    lines += ["", "Per clip and edit (mean over seeds):", "",
              "| method | clip | edit | edit fidelity | track error px | warp error |", "|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        for key in dict.fromkeys((r["clip"], r["edit"]) for r in rs):
            sel = [r for r in rs if (r["clip"], r["edit"]) == key]
            lines.append(f"| {name} | {key[0]} | {key[1]} | {fmt([r['fidelity'] for r in sel], '{:.2f}')} | "
                         f"{fmt([r['track_px'] for r in sel], '{:.2f}')} | {fmt([r['warp'] for r in sel], '{:.4f}')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one clip, one edit, one seed, three methods")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=2, help=f"how many of the {len(CLIPS)} clips")
    p.add_argument("--seeds", type=int, nargs="+", default=[33])
    p.add_argument("--tune-steps", type=int, default=10)
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="toy model file")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/quality_<machine>.md)")
    p.add_argument("--strip", type=Path, default=None, help="picture strip (default bench/results/quality_strip.png)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds[:1] if args.quick else args.seeds
    settings = Settings(tune_steps=args.tune_steps, ddim_steps=args.ddim_steps, cfg=args.cfg)
    start = time.perf_counter()
    _, meta, rows, reference, strip = run(args.quick, seeds, settings, args.frames, args.clips, args.weights)
    text = table(rows, reference, settings, args.frames, seeds, meta, args.quick, (time.perf_counter() - start) / 60)
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"quality_cpu{suffix}.md"
    strip_path = args.strip or RESULTS / f"quality_strip{suffix}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    write_strip(strip, strip_path)
    print(text)
    print(f"wrote {out} and {strip_path}")


if __name__ == "__main__":
    main()
