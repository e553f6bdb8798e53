"""Edit quality on a toy world, two tracks: per-frame (untuned), Tune-A-Video and VRWKV
configurations side by side on the same clips and seeds, through the pack's own pipeline
(toyworld/pipeline.py) on the world's committed model (bench/quality/).

    python -m bench.edit_quality [--quick] [--methods untuned tav@1e-3 default ...] [--frames 8 16]

Every method tunes on each clip with its source prompt (each tuning seed), then
- generation track (Tune-A-Video's one-shot task): samples the source prompt and each edit
  prompt from fresh noise, independent per frame and shared across frames, no inversion;
  only a temporal layer that learned the clip puts the object where the clip had it;
- edit track: DDIM-inverts the clip and samples each edit prompt from the inverted noise.
Measured against the source clip (bench/quality/measures.py): track error (lost frames
counted) and lost share, displacement error and speed, attribute consistency, prompt
fidelity, warp error by the source's flow and by the clip's own, flicker, reconstruction PSNR.
Results: bench/results/<name>_<device>.jsonl (every unit, appended as it finishes: a rerun
or a longer protocol redoes nothing), .md (tables with 95% confidence intervals over clip x
tuning-seed units, bench/quality/report.py), _strip.png (every method) and _strip_short.png
(per-frame, Tune-A-Video and the nodes' defaults).
"""

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

from . import machine_name
from .quality import report
from .quality.methods import METHODS, NODE_LR, NODE_STEPS, RECIPE_LR, method
from .quality.run import Protocol, load_results, run, units
from .quality.worlds import WORLDS, get_world

COMMAND = "bash scripts/bench.sh edit_quality"
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parents[1] / "output" / "quality_cache"
# A bare run remakes the headline report (quality_500steps_cpu.md): per-frame, Tune-A-Video at its
# recipe's rate and two others, the nodes' defaults (and with their former edit end), and the two
# cheaper blocks that keep the defaults' sampling. Every other committed report names its own command.
DEFAULT_METHODS = ["untuned", "tav", "tav@1e-4", "tav@3e-4", "default", "default-edit03", "default-mid",
                   "default-cm1-low"]
# The textured world samples only the source prompt from fresh noise: its units cost about twice a
# flat one, and the edit track already renders every edit prompt.
WORLD_GENERATION = {"flat": {"gen_prompts": "all", "shared": "source"},
                    "textured": {"gen_prompts": "source", "shared": "none"}}
SHORT_STRIP = ("untuned", "tav")   # and the defaults, else the first VRWKV method asked for
QUICK = dict(methods=["untuned", "tav", "default"], frames=[8], tune_seeds=[33], sample_seeds=[1000], clips=1,
             tune_steps=60)


def write_report(records: dict, specs: list, protocol: Protocol, path: Path, strip: Path, cache: Path,
                 reference: str | None, minutes: float, partial: tuple, command: str) -> str:
    rs = list(records.values())
    world = get_world(protocol.world)
    lines = [f"# Edit quality on the {protocol.world} toy world", "",
             *([f"**Partial: {partial[0]} of {partial[1]} units done.**", ""] if partial[0] < partial[1] else []),
             f"Machine: {machine_name('cpu')}, one process of one torch thread (wall time of this invocation "
             f"{minutes:.0f} min; tuning times are contended unless stated otherwise). Command: `{command}`.", "",
             f"Model: {world.weights.relative_to(world.weights.parents[2])}. Clips: "
             f"{', '.join(c.name for c in world.cases[:protocol.clips])}; frames {list(protocol.frames)}; tuning "
             f"{protocol.tune_steps} steps with seeds {list(protocol.tune_seeds)}; DDIM {protocol.ddim_steps} steps, "
             f"cfg {protocol.cfg}, sampling seeds {list(protocol.sample_seeds)}. VRWKV rows: lr is VRWKV Tune On "
             f"Video's `learning_rate` (default {NODE_LR:g}), which vrwkv/tuning.py's multipliers scale for the "
             f"blocks and their temporal parameters; Tune-A-Video: baselines/tune_a_video.py, recipe lr {RECIPE_LR:g}.",
             "",
             "Cells: mean ± half-width of the 95% confidence interval, Student t over units (one unit = one clip x "
             "one tuning seed; its value is the mean over its sampling seeds and prompts; per-frame editing has "
             "one unit per clip). A difference is called only outside the intervals (see the paired rows).", ""]
    for frames in protocol.frames:
        groups = report.by_method(rs, specs, frames)
        if "generation" in protocol.tracks:
            lines += [f"## Generation track, {frames} frames", "",
                      "Source prompt, noise independent per frame (edit prompts and shared noise: last columns); "
                      "track error counts a frame where the object is lost at the frame's diagonal.", ""]
            lines += report.table(groups, report.GENERATION) + [""]
            lines += ["Track error per clip (mean over tuning and sampling seeds):", ""]
            lines += report.per_clip(groups, "track_px", report.HEADLINE, "{:.2f}") + [""]
            for ref in dict.fromkeys(r for r in ("untuned", reference) if r and groups.get(r)):
                lines += report.paired(groups, ref, "track_px", report.HEADLINE, "{:.2f}") + [""]
        if "edit" in protocol.tracks:
            lines += [f"## Edit track, {frames} frames", ""] + report.table(groups, report.EDIT, extra=False) + [""]
            for ref in dict.fromkeys(r for r in ("untuned", reference) if r and groups.get(r)):
                lines += report.paired_table(groups, ref, report.EDIT_TEMPORAL) + [""]
    text = "\n".join(lines) + "\n"
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    first = world.cases[0].name
    report.write_strip(rs, specs, cache, strip, first, protocol.frames[0])
    vrwkv = [s for s in specs if method(s).kind == "vrwkv"]
    short = [s for s in SHORT_STRIP if s in specs] + (["default"] if "default" in specs else vrwkv[:1])
    report.write_strip(rs, short, cache, strip.with_name(strip.stem + "_short.png"), first, protocol.frames[0])
    return text


def default_name(args) -> str:
    world = "" if args.world == "flat" else f"_{args.world}"
    frames = "" if args.frames == [8] else "_" + "_".join(map(str, args.frames))
    return f"quality{world}{frames}_{args.tune_steps}steps" + ("_quick" if args.quick else "")


def parse(argv=None):
    """The arguments, every default resolved, and the protocol they ask for."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: one clip, 8 frames, 60 steps, three methods")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                   help=f"names from {', '.join(METHODS)}, each optionally @<lr>")
    p.add_argument("--world", default="flat", choices=list(WORLDS))
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--frames", type=int, nargs="+", default=[8])
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[33, 34, 35])
    p.add_argument("--sample-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    p.add_argument("--tune-steps", type=int, default=NODE_STEPS, help=f"every method's (default {NODE_STEPS}: "
                   "VRWKV Tune On Video's, as Tune-A-Video's recipe)")
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--tracks", nargs="+", default=["generation", "edit"], choices=["generation", "edit"])
    p.add_argument("--gen-prompts", choices=["source", "all"], help="prompts the generation track samples "
                   "(default: the world's; flat: all, textured: source)")
    p.add_argument("--shared", choices=["none", "source", "all"], help="prompts also sampled from one noise "
                   "shared by every frame (default: the world's; flat: source, textured: none)")
    p.add_argument("--reference", default="tav", help="method the paired rows also compare with")
    p.add_argument("--name", help="results file stem: <results>/<name>_cpu.* (default: quality[_textured]"
                   "[_<frames>]_<steps>steps, as the committed reports)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default bench/results)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the strip's frames are kept (default "
                   "output/quality_cache)")
    p.add_argument("--overwrite", action="store_true", help="replace a report another run's command wrote")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    for k, v in WORLD_GENERATION[args.world].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.name is None:
        args.name = default_name(args)
    for spec in args.methods:
        method(spec)                     # a bad name fails here, before hours of work
    if not 1 <= args.clips <= len(get_world(args.world).cases):
        raise ValueError(f"--clips must be within 1..{len(get_world(args.world).cases)}, got {args.clips}")
    return args, Protocol(args.world, args.clips, tuple(args.frames), tuple(args.tune_seeds), tuple(args.sample_seeds),
                          args.tune_steps, args.ddim_steps, args.cfg, tuple(args.tracks), args.gen_prompts, args.shared)


def made_by(table: Path) -> tuple | None:
    """The methods and protocol of the command that wrote an existing report (None: no report, or
    one that names no command)."""
    found = re.search(r"Command: `([^`]*)`", table.read_text()) if table.exists() else None
    if found is None:
        return None
    try:
        args, protocol = parse(shlex.split(found.group(1).removeprefix(COMMAND)))
    except (SystemExit, ValueError):     # a command this version no longer takes: another run's
        return (found.group(1),)
    return args.methods, protocol


def main(argv=None):
    args, protocol = parse(argv)
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    stem = args.results / f"{args.name}_cpu"
    path, table_path, strip = stem.with_suffix(".jsonl"), stem.with_suffix(".md"), Path(f"{stem}_strip.png")
    previous = made_by(table_path)
    if previous not in (None, (args.methods, protocol)) and not args.overwrite:
        raise SystemExit(f"{table_path} is the report of another run (other methods or protocol, its command is "
                         "in it): give this run its own --name, or pass --overwrite to replace that report")
    total = len(units(args.methods, protocol))
    start = time.perf_counter()

    def progress(record, i, n):
        track = report.unit_value(record, "track_px", **report.HEADLINE)
        print(f"[{i}/{n}] {record['method']:48s} {record['case']:7s} {record['frames']:2d} frames seed "
              f"{record['tune_seed']}: generation track error {track:.2f} px, output change {record['moved']:.3f} "
              f"({record['wall_s']:.0f} s)", flush=True)
        done = load_results(path)
        mine = {u.key(): done[u.key()] for u in units(args.methods, protocol) if u.key() in done}
        write_report(mine, args.methods, protocol, table_path, strip, args.cache, args.reference,
                     (time.perf_counter() - start) / 60, (len(mine), total), command)

    records = run(args.methods, protocol, path, args.cache, progress)
    text = write_report(records, args.methods, protocol, table_path, strip, args.cache, args.reference,
                        (time.perf_counter() - start) / 60, (len(records), total), command)
    print(text)


if __name__ == "__main__":
    main()
