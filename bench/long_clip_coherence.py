"""Coherence across window boundaries: a long toy clip edited in context windows with Bi-WKV
carry, without carry, and with plain overlap, against the whole clip in one pass.

    python -m bench.long_clip_coherence [--frames 48 96] [--window 12] [--overlap 4]

The committed toy model (toyworld) is patched and tuned once on each clip with windowed
tuning (window = the context window, so the decay is normalised by it), then the clip is
DDIM-inverted with the source prompt and sampled with an edit prompt (cfg 4) through the
pack's ContextWindows wrapper (vrwkv/windows.py, as VRWKV Context Windows installs it; a
fresh wrapper per sampling run, as each ComfyUI sampling run starts with an empty store). Measured per
consecutive frame pair (vrwkv/metrics.py): optical-flow warp error and flicker, averaged over
the pairs where the window membership changes (a window starts or ends: the boundaries) and
over all other pairs; and the PSNR of each edit against the whole-clip edit. Writes
bench/results/long_clip_coherence_<device>.md.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import load_pack, machine_name
from toyworld.fidelity import as_image_batch
from toyworld.model import Guided, load_model
from toyworld.pipeline import Method, prepare
from toyworld.world import Spec, make_clip

load_pack()
from vrwkv_editor.vrwkv import metrics  # noqa: E402
from vrwkv_editor.vrwkv.config import PAPER  # noqa: E402
from vrwkv_editor.vrwkv.ddim import ddim_sigmas, sample_ddim  # noqa: E402
from vrwkv_editor.vrwkv.patch import find_patch  # noqa: E402
from vrwkv_editor.vrwkv.tuning import TuneSettings, draw_window, epsilon_loss, param_groups, tune  # noqa: E402
from vrwkv_editor.vrwkv.windows import ContextWindows, frame_windows  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE, EDIT = "a large red circle", "a large blue circle"


class Windowed:
    """The toy model called through a ContextWindows wrapper, as ComfyUI calls a MODEL with
    a model_function_wrapper (apply_model, {"input", "timestep", "c", "cond_or_uncond"})."""

    def __init__(self, model, wrapper):
        self.model, self.wrapper, self.text = model, wrapper, model.text

    def denoise(self, x, sigma, context, transformer_options):
        def apply_model(x, t, context, transformer_options):
            return self.model.denoise(x, t, context, transformer_options)
        args = {"input": x, "timestep": sigma, "cond_or_uncond": transformer_options["cond_or_uncond"],
                "c": {"context": context, "transformer_options": transformer_options}}
        return self.wrapper(apply_model, args)


def tune_windowed(model, options, params, clip, steps, lr, window, seed=33):
    """The pack's tuning loop, each step on a random window of the clip (VRWKV Tune On Video's window)."""
    cond = model.text([SOURCE]).detach()
    call_options = {**options, "cond_or_uncond": [0]}

    def step_loss(generator):
        start = draw_window(generator, clip.shape[0], window)
        x0 = clip[start:start + window]
        return epsilon_loss(lambda x, s: model.denoise(x, s, cond.expand(x.shape[0], -1, -1), call_options), x0,
                            model.sigmas, generator)

    settings = TuneSettings(steps=steps, lr=lr, seed=seed)
    with torch.enable_grad():
        return tune(param_groups(params, settings), step_loss, settings)


@torch.no_grad()
def edit(model, options, clip, window, overlap, carry, steps):
    """Invert with the source prompt (cfg 1), sample the edit prompt (cfg 4); window 0 = whole clip."""
    def runner():
        return model if window == 0 else Windowed(model, ContextWindows(window, overlap, carry))
    sigmas = ddim_sigmas(model.sigmas, steps)
    inverted = sample_ddim(Guided(runner(), model.text([SOURCE]), model.text([""]), 1.0, options), clip, sigmas.flip(0))
    guided = Guided(runner(), model.text([EDIT]), model.text([""]), 4.0, options)
    return sample_ddim(guided, inverted, sigmas, edit=True)


def boundary_pairs(frames, window, overlap) -> np.ndarray:
    """Mask over the frames - 1 consecutive pairs: True where a window starts or ends between them."""
    mask = np.zeros(frames - 1, bool)
    for s, e in frame_windows(frames, window, overlap):
        if s > 0:
            mask[s - 1] = True
        if e < frames:
            mask[e - 1] = True
    return mask


def coherence_table(base, args, length) -> list[str]:
    """Tunes the toy model on a clip of `length` frames and edits it every way: a results section."""
    clip, _ = make_clip("zigzag", length, Spec("red", "circle", "large", 0, 0), 1)
    model, options, params = prepare(base, Method("vrwkv", "vrwkv", lr=args.lr, config=PAPER))
    find_patch(options).blocks.set_norm_frames(args.window)
    t0 = time.perf_counter()
    losses = tune_windowed(model, options, params, clip, args.tune_steps, args.lr, args.window)
    print(f"{length} frames: tuned {args.tune_steps} steps in {time.perf_counter() - t0:.0f} s, "
          f"last loss {losses[-1]:.4f}", flush=True)
    configs = [("whole clip (one pass)", 0, 0, False), ("windows, no carry, no overlap", args.window, 0, False),
               (f"plain overlap ({args.overlap} frames), no carry", args.window, args.overlap, False),
               ("carry, no overlap", args.window, 0, True),
               (f"carry + overlap ({args.overlap} frames)", args.window, args.overlap, True)]
    results = {}
    for name, window, overlap, carry in configs:
        t0 = time.perf_counter()
        frames = as_image_batch(edit(model, options, clip, window, overlap, carry, args.ddim_steps))
        results[name] = (frames, window, overlap, time.perf_counter() - t0)
        print(f"{name}: {results[name][3]:.0f} s", flush=True)
    reference = results[configs[0][0]][0]
    source_warp = np.nanmean(metrics.warp_error(as_image_batch(clip))[0])
    lines = [(f"## {length} frames ({len(frame_windows(length, args.window, args.overlap))} windows with overlap, "
              f"{len(frame_windows(length, args.window, 0))} without)"), "",
             (f"Warp error of the source clip itself: {source_warp:.4f}. Load average {os.getloadavg()[0]:.1f} at "
              "the end of this section."), "",
             ("| run | warp error at boundaries | warp error elsewhere | flicker at boundaries | flicker elsewhere "
              "| PSNR vs whole clip (dB) | time (s) |"), "|---|---|---|---|---|---|---|"]
    for name, (frames, window, overlap, seconds) in results.items():
        mask = boundary_pairs(length, window or args.window, overlap if window else args.overlap)
        warp, flick = metrics.warp_error(frames)[0], metrics.flicker(frames)
        psnr = "-" if name == configs[0][0] else f"{metrics.psnr(frames, reference):.1f}"
        lines.append(f"| {name} | {np.nanmean(warp[mask]):.4f} | {np.nanmean(warp[~mask]):.4f} | "
                     f"{flick[mask].mean():.4f} | {flick[~mask].mean():.4f} | {psnr} | {seconds:.0f} |")
    return lines + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[48, 96], help="clip lengths, one section each")
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--tune-steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=5e-5, help="tuning rate (blocks at 20x: 1e-3, where they move within the steps)")
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base, _ = load_model()
    device = "cpu"
    lines = [f"# Coherence across context-window boundaries (toy world): {machine_name(device)}", "",
             f"Toy model (toyworld), zigzag clips (32x32 px), VRWKV skip+mid tuned {args.tune_steps} steps at lr "
             f"{args.lr:g} on random {args.window}-frame windows of each clip (decay normalised by {args.window} "
             f"frames), DDIM {args.ddim_steps} steps: inversion with '{SOURCE}' at cfg 1, edit '{EDIT}' at cfg 4. "
             f"Windows of {args.window} frames. Boundary pairs: consecutive frames between which a window starts "
             "or ends (for the whole clip: the pairs of the windowed runs with overlap "
             f"{args.overlap}). Lower warp error and flicker are better; PSNR is against the whole-clip edit "
             "(higher = closer to processing the clip as one sequence). With carry, a window's future state "
             "comes from the previous model call: what a window sees of the window k ahead is k steps old. "
             "Time: inversion + edit, one thread, on a shared "
             f"machine. `python -m bench.long_clip_coherence --frames {' '.join(map(str, args.frames))}`.", ""]
    for length in args.frames:
        lines += coherence_table(base, args, length)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"long_clip_coherence_{device}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
