"""Minutes per edit: what one full edit costs a user, from the per-step costs that
bench.pipeline_cost measured (a few steps of each phase timed, the rest extrapolated).

    python -m bench.edit_minutes --precision bf16 [--size 64]

An edit = VRWKV Tune On Video with its default steps, then DDIM inversion and sampling with
the steps and cfg of the example workflows (read from workflows/*.json): minutes =
tuning steps x s/step + inversion steps x s/step + sampling steps x s/step, for the VRWKV
default and for Tune-A-Video in the same precision, at each clip length measured, and for
the long-clip path (tuning windows and VRWKV Context Windows). VAE encode/decode and text
encoding are not included (seconds, the same for every method). Peak VRAM (CUDA): the
largest memory the caching allocator reserved in any phase (UNet weights included) plus the
CUDA context; a card fits an edit when that is below its size.
"""

import argparse
import json
from pathlib import Path

from . import load_pack
from .pipeline_cost import RESULTS, load_raw, median, node_defaults, results_base

ROOT = Path(__file__).resolve().parents[1]
CARDS_GIB = (12, 16, 24)
METHODS = ("default", "tune-a-video")


def workflow_value(path: Path, node_class, name: str):
    """A widget's value in a UI-format workflow file, by input name."""
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from workflow_api import widget_inputs
    node = next(n for n in json.loads(path.read_text())["nodes"] if n["type"] == node_class.__name__)
    values = iter(node["widgets_values"])
    for widget, control in widget_inputs({"input": node_class.INPUT_TYPES()}):
        value = next(values)
        if widget == name:
            return value
        if control:
            next(values)
    raise KeyError(f"{node_class.__name__} in {path.name} has no widget {name!r}")


def edit_settings() -> dict:
    """The steps and cfg of an edit: the tune node's default steps, the example workflow's
    inversion and sampling steps and cfg, the long-clip workflow's windows."""
    load_pack()
    from vrwkv_editor.nodes.ddim import VRWKVDDIMInversion, VRWKVKSampler
    from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
    from vrwkv_editor.nodes.windows import VRWKVContextWindows
    edit, long = ROOT / "workflows" / "vrwkv_edit_video.json", ROOT / "workflows" / "vrwkv_long_clip.json"
    return {"tune_steps": node_defaults(VRWKVTuneOnVideo)["steps"],
            "invert_steps": workflow_value(edit, VRWKVDDIMInversion, "steps"),
            "sample_steps": workflow_value(edit, VRWKVKSampler, "steps"),
            "cfg": workflow_value(edit, VRWKVKSampler, "cfg"),
            "window": workflow_value(long, VRWKVContextWindows, "window"),
            "overlap": workflow_value(long, VRWKVContextWindows, "overlap")}


def edit_rows(raw: dict, settings: dict) -> list:
    rows = []
    for key, runs in raw.items():
        parts = key.split("|")
        if len(parts) < 3 or parts[0] not in METHODS or parts[2] != "on":
            continue
        t = {p: median([s for r in runs for s in r[p]["step_s"]]) for p in ("tune", "invert", "sample")}
        if None in t.values():
            continue
        seconds = (settings["tune_steps"] * t["tune"] + settings["invert_steps"] * t["invert"]
                   + settings["sample_steps"] * t["sample"])
        reserved = [r[p].get("reserved_bytes") for r in runs for p in ("tune", "invert", "sample")]
        peak = (max(reserved) + max(r.get("context_bytes", 0) for r in runs)) / 2**30 if all(reserved) else None
        rows.append({"frames": int(parts[1]), "window": parts[3][1:] if len(parts) > 3 else "", "method": parts[0],
                     "dtype": "/".join(runs[-1].get("tune_unet_dtype", [])), "steps": t, "minutes": seconds / 60,
                     "peak_gib": peak})
    return sorted(rows, key=lambda r: (bool(r["window"]), r["frames"], METHODS.index(r["method"])))


def table(rows: list, settings: dict, header: list) -> str:
    fits = " | ".join(f"fits {c} GB" for c in CARDS_GIB)
    lines = header + ["| frames | method | UNet computes in | tune s/step | invert s/step | sample s/step | "
                      f"minutes per edit | vs Tune-A-Video | peak VRAM GiB | {fits} |",
                      "|---" * (9 + len(CARDS_GIB)) + "|"]
    by = {(r["frames"], r["window"], r["method"]): r for r in rows}
    for r in rows:
        tav = by.get((r["frames"], r["window"], "tune-a-video"))
        windows = f" (windows of {r['window']}, overlap {settings['overlap']})" if r["window"] else ""
        frames = f"{r['frames']}{windows}"
        ratio = f"{r['minutes'] / tav['minutes']:.2f}x" if tav else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        fits = [("yes" if r["peak_gib"] <= c else "no") if r["peak_gib"] is not None else "-" for c in CARDS_GIB]
        steps = " | ".join(f"{r['steps'][p]:.3g}" for p in ("tune", "invert", "sample"))
        lines.append(f"| {frames} | {r['method']} | {r['dtype']} | {steps} | {r['minutes']:.1f} | {ratio} | {peak} | "
                     + " | ".join(fits) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--size", type=int, default=64, help="latent size (pixels / 8)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    raw = load_raw(results_base(device, "full", args.size, args.precision, args.results))
    if not raw:  # the dry run measures the 2-level UNet
        raw = load_raw(results_base(device, "shallow", args.size, args.precision, args.results))
    settings = edit_settings()
    machine = next((r["machine"] for runs in raw.values() if isinstance(runs, list) for r in runs if "machine" in r),
                   device)
    header = [f"# Minutes per edit: {machine}, {args.precision}", "",
              f"One edit at {args.size * 8}x{args.size * 8} px: {settings['tune_steps']} tuning steps (VRWKV Tune On "
              f"Video's default), {settings['invert_steps']} DDIM inversion steps and {settings['sample_steps']} "
              f"sampling steps at cfg {settings['cfg']} (the example workflow's), per-step costs from "
              f"pipeline_cost_{device}_*_{args.precision}.json (a few steps of each phase timed, the rest "
              "extrapolated; medians), gradient checkpointing on, both methods in the same precision. The long "
              "clip tunes on windows and inverts and samples through VRWKV Context Windows "
              f"(window {settings['window']}, overlap {settings['overlap']}, carry). Not included: VAE encode/decode "
              "and text encoding. Peak VRAM: the most the allocator reserved in any phase (UNet weights included) "
              "plus the CUDA context.", ""]
    out = args.results / f"edit_minutes_{device}_{args.precision}.md"
    out.write_text(table(edit_rows(raw, settings), settings, header))
    print(out.read_text())


if __name__ == "__main__":
    main()
