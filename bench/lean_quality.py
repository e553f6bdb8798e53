"""Edit quality of the lean block options on the toy world, beside Tune-A-Video and the
shipped blocks: the same clips, edits, seeds, settings and metrics as bench/edit_quality.py
(whose functions this reuses), for the configurations of bench/pipeline_cost.py.

    python -m bench.lean_quality [--configs shipped lean] [--clips 1] [--seeds 33]

VRWKV configurations are tuned at edit_quality's ablation rate (the shipped rate barely moves
the blocks in the reduced steps); Tune-A-Video at its own recipe's rate. Writes
bench/results/lean_quality_cpu.md.
"""

import argparse
import time
from pathlib import Path
from unittest import mock

import torch

from . import edit_quality as eq
from .pipeline_cost import CONFIGS
from .toyworld import pipeline
from .toyworld.fidelity import as_image_batch, detections
from .toyworld.model import load_model
from .toyworld.pipeline import Method, Settings, edit
from .toyworld.world import make_clip

RESULTS = Path(__file__).resolve().parent / "results"


def methods(configs: list) -> list:
    """(Method, block options) per configuration; baselines first."""
    out = [(Method("Tune-A-Video", "tav", lr=eq.SHIPPED_LR), {})]
    for name in configs:
        choice = dict(CONFIGS[name])
        placement, resolution = choice.pop("placement"), choice.pop("resolution")
        out.append((Method(f"VRWKV {name}, lr {eq.ABLATION_LR:g}", "vrwkv", lr=eq.ABLATION_LR, placement=placement,
                           resolution=resolution), choice))
    return out


def edit_with_options(model, method, options, *args):
    """edit(), with the block options added to the spec the pipeline builds."""
    spec = pipeline.block_spec
    with mock.patch.object(pipeline, "block_spec", lambda *a: spec(*a, **options)):
        return edit(model, method, *args)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["shipped", "lean"], choices=[n for n, c in CONFIGS.items() if c])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[33])
    p.add_argument("--tune-steps", type=int, default=30)
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(tune_steps=args.tune_steps, ddim_steps=args.ddim_steps)
    model, meta = load_model(eq.WEIGHTS)
    start = time.perf_counter()
    todo = methods(args.configs)
    rows, sources = {m.name: [] for m, _ in todo}, []
    for kind, spec, path_seed, edits in eq.CLIPS[:args.clips]:
        clip, _ = make_clip(kind, args.frames, spec, path_seed)
        sources.append(clip)
        source_found = detections(clip)
        source_prompt = eq.prompt(spec.size, spec.colour, spec.shape)
        prompts = [eq.prompt(spec.size, c, s) for c, s in edits]
        for method, options in todo:
            for seed in args.seeds:
                out = edit_with_options(model, method, options, clip, source_prompt, prompts,
                                        Settings(**{**vars(settings), "seed": seed}))
                recon = eq.metrics.psnr(as_image_batch(out["reconstruction"]), as_image_batch(clip))
                for (c, s), prompt in zip(edits, prompts):
                    row = eq.measure(out["edits"][prompt], clip, c, s, source_found)
                    row.update(recon_psnr=recon, tune_s=out["tune_s"], clip=kind, edit=prompt, seed=seed)
                    rows[method.name].append(row)
                print(f"{kind:8s} {method.name:40s} seed {seed}: fidelity "
                      f"{[round(r['fidelity'], 2) for r in rows[method.name][-len(edits):]]}", flush=True)
    text = eq.table(rows, eq.source_reference(sources), settings, args.frames, args.seeds, meta, False,
                    (time.perf_counter() - start) / 60)
    text = text.replace("# Edit quality on the toy world", "# Edit quality of the lean block options (toy world)", 1)
    text += "\nConfigurations (bench/pipeline_cost.py): " + "; ".join(
        f"**{n}** {CONFIGS[n]}" for n in args.configs) + "\n"
    out = RESULTS / "lean_quality_cpu.md"
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)


if __name__ == "__main__":
    main()
