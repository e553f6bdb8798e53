"""One toy-world edit end to end on the committed toy model, no ComfyUI needed: a clip is
patched, tuned, DDIM-inverted and sampled with the edit prompt (toyworld/pipeline.py; VRWKV
Patch Model's and VRWKV Tune On Video's defaults), then both prompts are sampled from fresh
noise by the tuned model (the generation track: has it learned the clip's motion?).

    python -m toyworld.edit_demo [--path zigzag] [--source "a large red circle"]
                                 [--edit "a large blue circle"] [--method vrwkv]

Writes a new folder output/toy_edit_<n>/ (never an earlier one): before_after.gif (source
left, edit right), before_after.png (rows: source, edit, then the source and edit prompts
from fresh noise) and metrics.md.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fidelity import as_image_batch, detections, edit_fidelity, track, whole_in_frame
from .model import WEIGHTS, load_model
from .pipeline import Method, Settings, edit_tuned, generate, tune_method
from .text import tokenize
from .world import COLOURS, PATH_KINDS, SHAPES, SIZES, Spec, make_clip

from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv import metrics  # noqa: E402
from vrwkv_editor.vrwkv.tuning import TuneSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODE = TuneSettings()          # VRWKV Tune On Video's defaults: steps, learning rate
METHODS = {
    "vrwkv": Method("VRWKV (VRWKV Patch Model's and VRWKV Tune On Video's defaults)", "vrwkv", lr=NODE.lr),
    "tav": Method("Tune-A-Video", "tav", lr=3e-5),
    "per-frame": Method("per-frame (no tuning)", "plain"),
}


def parse(caption: str) -> dict:
    """The size, colour and shape words of a caption."""
    tokenize(caption)
    words = caption.lower().split()
    found = {kind: next((w for w in words if w in names), None)
             for kind, names in (("size", SIZES), ("colour", COLOURS), ("shape", SHAPES))}
    if found["colour"] is None or found["shape"] is None:
        raise ValueError(f"caption {caption!r} needs a colour {tuple(COLOURS)} and a shape {SHAPES}")
    return found


def new_folder(parent: Path, stem: str = "toy_edit") -> Path:
    for n in range(1, 100000):
        folder = parent / f"{stem}_{n:03d}"
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free output folder name under {parent}; clear old {stem}_* folders")


def save_before_after(source: torch.Tensor, edited: torch.Tensor, generated: list, folder: Path,
                      scale: int = 8) -> None:
    """GIF: source | edit per frame; PNG rows: source, edit, then each generated clip."""
    a, b, *g = ((as_image_batch(x) * 255).round().astype(np.uint8) for x in (source, edited, *generated))
    up = lambda f: Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
    pairs = [Image.fromarray(np.concatenate([x, y], axis=1)) for x, y in zip(a, b)]
    pairs = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pairs]
    pairs[0].save(folder / "before_after.gif", save_all=True, append_images=pairs[1:], duration=250, loop=0)
    rows = [np.concatenate(list(x), axis=1) for x in (a, b, *g)]
    up(np.concatenate(rows, axis=0)).save(folder / "before_after.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", choices=PATH_KINDS, default="zigzag", help="how the object moves")
    p.add_argument("--source", default="a large red circle", help="what the clip shows")
    p.add_argument("--edit", default="a large blue circle", help="the edit prompt")
    p.add_argument("--method", choices=list(METHODS), default="vrwkv")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--tune-steps", type=int, default=NODE.steps, help="VRWKV Tune On Video's default")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=33)
    p.add_argument("--out", type=Path, default=ROOT / "output", help="parent folder of the new output folder")
    args = p.parse_args(argv)
    torch.set_num_threads(1)    # the toy model is too small for threads: on 2 shared cores they made it 10x slower
    src, dst = parse(args.source), parse(args.edit)
    spec = Spec(src["colour"], src["shape"], src["size"] or "large", 0, 0)
    model, meta = load_model(WEIGHTS)
    clip, _ = make_clip(args.path, args.frames, spec, seed=1)
    method = METHODS[args.method]
    print(f"{method.name}: tuning {args.tune_steps} steps on a {args.frames}-frame {args.path} clip of "
          f"'{args.source}', then editing to '{args.edit}'", flush=True)
    settings = Settings(tune_steps=args.tune_steps, cfg=args.cfg, seed=args.seed)
    tuned = tune_method(model, method, clip, args.source, settings)
    out = edit_tuned(tuned, clip, args.source, [args.edit], settings)
    edited = out["edits"][args.edit]
    generated = [generate(tuned, prompt, tuple(clip.shape), settings, args.seed) for prompt in (args.source, args.edit)]
    source_found, found = detections(clip), detections(edited)
    size = tuple(clip.shape[-2:])
    img, ref = as_image_batch(edited), as_image_batch(clip)
    report = metrics.coherence_report(img, ref).means()
    rows = {
        "edit fidelity (frames with the edit's colour and shape)":
            f"{edit_fidelity(found, dst['colour'], dst['shape'], whole_in_frame(source_found)):.2f}",
        "track error vs source (px)": f"{metrics.track_error(track(found), track(source_found), size).distance:.2f}",
        "flow end-point error vs source (px)": f"{report['motion_epe']:.3f}",
        "warp error (source)": f"{report['warp_error']:.4f} ({report['source_warp_error']:.4f})",
        "flicker (source)": f"{report['flicker']:.4f} ({report['source_flicker']:.4f})",
        "reconstruction PSNR (dB)": f"{metrics.psnr(as_image_batch(out['reconstruction']), ref):.1f}",
        "tuning time (s)": f"{tuned.tune_s:.0f}",
    }
    for prompt, frames in zip((args.source, args.edit), generated):
        tracked = metrics.track_error(track(detections(frames)), track(source_found), size)
        rows[f"generated from fresh noise, '{prompt}': track error vs source (px)"] = \
            f"{tracked.distance:.2f} (object lost in {tracked.lost:.0%} of frames)"
    folder = new_folder(args.out)
    save_before_after(clip, edited, generated, folder)
    text = [f"# Toy edit: '{args.source}' -> '{args.edit}'", "",
            f"{method.name} (lr {method.lr}), {args.tune_steps} tuning steps, DDIM 25 steps, cfg {args.cfg}, "
            f"{args.frames} frames, {args.path} path, seed {args.seed}; model step {meta.get('step')}. "
            "before_after.png rows: source, edit, then the source and the edit prompt generated from fresh noise "
            "(independent per frame) by the tuned model.", "",
            "| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    (folder / "metrics.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    print(f"wrote {folder}/before_after.gif, before_after.png, metrics.md")


if __name__ == "__main__":
    main()
