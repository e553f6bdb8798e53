"""Pipeline cost: one tuning step, one DDIM inversion step and one sampling step (with CFG) of
plain SD1.5, Tune-A-Video and VRWKV configurations, inside a real ComfyUI, and the peak
memory each phase needs above the loaded model.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.pipeline_cost --depth full --size 8 \
        --frames 16 32 [--configs plain tune-a-video shipped lean] [--checkpointing on off]

Every case (configuration, frames, checkpointing) runs in a fresh process on a random-weight
SD1.5 (bench/comfy_model.py, float32). Tuning is the pack's loop: VRWKV Tune On Video itself
for VRWKV (trainable vrwkv), baselines/tune_a_video.py for Tune-A-Video (sparse-causal attn1,
temporal attention in every transformer block; trains attn1/attn2 to_q + the temporal
attentions), attn1/attn2 to_q for the plain UNet; gradient checkpointing as asked (ResBlocks,
SpatialTransformers and VRWKV blocks recomputed). Inversion is VRWKV DDIM Inversion (cfg 1),
sampling VRWKV KSampler (DDIM) at cfg 7.5 (cond and uncond in one batch), both on the
patched, untuned model (cost does not depend on the weights). Time per step = (time of 1 + N
steps - time of 1 step) / N after a warm-up run, so loading and set-up cancel out. Memory:
peak resident set (CPU, sampled every 5 ms) or allocated memory (CUDA). Tuning: above the
level with the bare UNet loaded, so the patches' own parameters, the block copy the tune node
trains and AdamW's state count. Inversion and sampling (run after tuning, which leaves memory
behind in the process): above the level before the phase, plus the patches' parameters. Raw runs accumulate in
bench/results/pipeline_cost_<device>_<depth>_<size>.json (later invocations add cases and
repeats); the table beside it (.md) keeps the fastest time and the least memory per case.
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

from . import load_pack, machine_name

load_pack()    # nothing in the pack imports ComfyUI at import time
from vrwkv_editor.vrwkv.config import DEFAULT, PAPER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "tune-a-video"
# name -> the VRWKV configuration (vrwkv/config.py); plain and tune-a-video are the baselines.
# "shipped" is the paper's block (the node's default before issue 10), "lean" the node's default.
CONFIGS = {
    "plain": None,
    "tune-a-video": None,
    "shipped": PAPER,
    "mid": PAPER.replace(placement="mid"),
    "cm1": PAPER.replace(channel_mix=1),
    "cm0": PAPER.replace(channel_mix=0),
    "cm0-r4": PAPER.replace(channel_mix=0, rank=0.25),
    "fused": PAPER.replace(fused_rkv=True),
    "lean": DEFAULT,
    "lean-merge": DEFAULT.replace(skip_fusion="merge"),
    "lean-half": DEFAULT.replace(min_level=1),
    "lean-cm1-half": DEFAULT.replace(channel_mix=1, min_level=1),
}
PHASES = ("tune", "invert", "sample")


class PeakMemory:
    """Peak memory above `start` (default: the level at entry): CUDA's allocator, or the
    resident set on the CPU."""

    def __init__(self, start: int | None = None):
        self.cuda = torch.cuda.is_available()
        self.start = start

    @staticmethod
    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    @classmethod
    def level(cls) -> int:
        """The live level now (freed heap returned to the system first)."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        return cls.resident()

    def __enter__(self):
        level = self.level()
        self.start = level if self.start is None else self.start
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        self.peak = level
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


def timed_steps(run, steps: int, model_level: int | None) -> dict:
    """Seconds per step and peak bytes above `model_level` (default: the level at the start)
    of run(n) (n steps). steps = 0: memory only, from one run of one step (no time)."""
    with PeakMemory(model_level) as memory:
        run(1)                                   # warm-up: loading, first calls, allocator growth
        times = []
        for n in (1, 1 + steps) if steps else ():
            t0 = time.perf_counter()
            run(n)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"step_s": (times[1] - times[0]) / steps if steps else None, "above_bytes": memory.above}


def one_case(config: str, frames: int, size: int, depth: str, checkpointing: bool, steps: int) -> dict:
    from .comfy_model import load_pack_in_comfy, random_sd15
    base = random_sd15(depth)
    load_pack_in_comfy()
    from vrwkv_editor.nodes.ddim import VRWKVDDIMInversion, VRWKVKSampler
    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(frames, 4, size, size, generator=g)}
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=g), {}]]
    import comfy.model_management
    comfy.model_management.load_models_gpu([base], force_full_load=True)
    model_level = PeakMemory.level()            # the loaded UNet: what every phase is measured above

    # The model the inversion and sampling phases run (the patched, untuned model), the
    # trained parameter count, the patches' own parameter bytes.
    state = {"model": base, "trained": 0, "patch_bytes": 0}
    if config in ("plain", REFERENCE):
        from baselines.tune_a_video import query_trainer, tune_a_video_comfy, tune_in_comfy

        def tuning(n):
            if config == REFERENCE:
                tav, trainer, params = tune_a_video_comfy(base, gradient_checkpointing=checkpointing)
                state["model"] = tav.apply(base)
                state["patch_bytes"] = sum(p.numel() * p.element_size() for p in tav.temporal.module.parameters())
            else:
                trainer, params = query_trainer(base, gradient_checkpointing=checkpointing)
            state["trained"] = sum(p.numel() for p in params)
            tune_in_comfy(trainer, params, latent["samples"], cond, n)
    else:
        from vrwkv_editor.nodes.patch_model import apply_vrwkv
        from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
        from vrwkv_editor.nodes.common import require_patch
        from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
        spec = block_spec(unet_layout(base.get_model_object("diffusion_model")), CONFIGS[config])

        def tuning(n):
            with torch.inference_mode():
                model = apply_vrwkv(base, spec)
                blocks = require_patch(model, "pipeline_cost").blocks
                state.update(model=model, trained=sum(p.numel() for p in blocks.parameters()),
                             patch_bytes=sum(p.numel() * p.element_size() for p in blocks.parameters()))
                VRWKVTuneOnVideo().tune(model, latent, cond, n, 3e-5, 0, "vrwkv", checkpointing, "auto")

    result = {"tune": timed_steps(tuning, steps, model_level)}
    model = state["model"]
    with torch.inference_mode():
        # Tuning leaves memory behind in the process, so these phases are measured above the
        # level before each; the patches' parameters are added (they are part of what sampling needs).
        for phase, run in (("invert", lambda n: VRWKVDDIMInversion().invert(model, latent, cond, n, 1.0, 0,
                                                                            "invert", "")),
                           ("sample", lambda n: VRWKVKSampler().sample(model, 0, n, 7.5, cond, uncond, latent,
                                                                       1.0, 0.0))):
            result[phase] = timed_steps(run, steps, None)
            result[phase]["above_bytes"] += state["patch_bytes"]
    result["params"] = state["trained"]
    return result


def sampling_side_by_side(configs: list, frames: int, size: int, depth: str, steps: int, rounds: int) -> dict:
    """Seconds per sampling step (VRWKV KSampler, cfg 7.5) of every configuration, in one
    process on one UNet, configurations interleaved for `rounds` rounds (the fastest kept):
    the fairest time ratio a shared machine allows."""
    from .comfy_model import load_pack_in_comfy, random_sd15
    from baselines.tune_a_video import TuneAVideo
    base = random_sd15(depth)
    load_pack_in_comfy()
    import comfy.ldm.modules.attention
    from vrwkv_editor.nodes.ddim import VRWKVKSampler
    from vrwkv_editor.nodes.patch_model import apply_vrwkv
    from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
    g = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(frames, 4, size, size, generator=g)}
    cond, uncond = ([[torch.randn(1, 77, 768, generator=g), {}]] for _ in range(2))
    models = {}
    with torch.inference_mode():
        for config in configs:
            if config == "plain":
                models[config] = base
            elif config == REFERENCE:
                unet = base.get_model_object("diffusion_model")
                models[config] = TuneAVideo(unet, comfy.ldm.modules.attention.optimized_attention).apply(base)
            else:
                layout = unet_layout(base.get_model_object("diffusion_model"))
                models[config] = apply_vrwkv(base, block_spec(layout, CONFIGS[config]))
        times = {config: [] for config in configs}
        for _ in range(rounds):
            for config, model in models.items():
                run = lambda n: VRWKVKSampler().sample(model, 0, n, 7.5, cond, uncond, latent, 1.0, 0.0)  # noqa: E731
                times[config].append(timed_steps(run, steps, None)["step_s"])
    return {config: min(t) for config, t in times.items()}


def case_key(config, frames, checkpointing) -> str:
    return f"{config}|{frames}|{'on' if checkpointing else 'off'}"


def best(runs: list) -> dict:
    """Fastest time and least memory per phase over a case's runs (and the slowest time)."""
    out = {"params": runs[0]["params"], "runs": len(runs)}
    for phase in PHASES:
        times = [r[phase]["step_s"] for r in runs if r[phase]["step_s"] is not None]
        out[phase] = {"step_s": min(times, default=None), "slowest_s": max(times, default=None),
                      "above_bytes": min(r[phase]["above_bytes"] for r in runs)}
    return out


def table(raw: dict, header: list) -> str:
    """Markdown table of every case in `raw`, ratios against Tune-A-Video (tuning, memory)
    and the plain UNet (sampling) at the same frames and checkpointing."""
    side = {k: v for k, v in raw.items() if k.startswith("sampling side by side")}
    rows = {k: best(v) for k, v in raw.items() if k not in side}
    lines = header + [
        "| ckpt | frames | config | trained M | tune s/step | tune GiB | tune time / TAV | tune mem / TAV | "
        "invert s/step | sample s/step | sample GiB | sample time / plain | sample mem / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(CONFIGS)}
    keys = sorted(rows, key=lambda k: (k.split("|")[2] == "off", int(k.split("|")[1]), order.get(k.split("|")[0], 99)))
    for key in keys:
        config, frames, ckpt = key.split("|")
        r = rows[key]
        tav, plain = rows.get(f"{REFERENCE}|{frames}|{ckpt}"), rows.get(f"plain|{frames}|{ckpt}")

        def ratio(ref, phase, field):
            mine, theirs = r[phase][field], ref[phase][field] if ref else None
            return f"{mine / theirs:.2f}x" if mine is not None and theirs else "-"

        def secs(phase):
            return "-" if r[phase]["step_s"] is None else f"{r[phase]['step_s']:.2f}"

        lines.append(
            f"| {ckpt} | {frames} | {config} | {r['params'] / 1e6:.1f} | {secs('tune')} | "
            f"{r['tune']['above_bytes'] / 2**30:.2f} | {ratio(tav, 'tune', 'step_s')} | "
            f"{ratio(tav, 'tune', 'above_bytes')} | {secs('invert')} | {secs('sample')} | "
            f"{r['sample']['above_bytes'] / 2**30:.2f} | {ratio(plain, 'sample', 'step_s')} | "
            f"{ratio(plain, 'sample', 'above_bytes')} |")
    for key, times in side.items():
        lines += ["", f"{key} (one process, configurations interleaved, the fastest of the rounds kept):", "",
                  "| config | s/step | / plain | / Tune-A-Video |", "|---|---|---|---|"]
        lines += [f"| {c} | {t:.2f} | " + " | ".join(f"{t / times[ref]:.2f}x" if ref in times else "-"
                                                     for ref in ("plain", REFERENCE)) + " |" for c, t in times.items()]
    return "\n".join(lines) + "\n"


def load_raw(base: Path) -> dict:
    path = base.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(raw: dict, args, device: str, base: Path) -> None:
    base.with_suffix(".json").write_text(json.dumps(raw, indent=1, sort_keys=True))
    header = [f"# Pipeline cost: {machine_name(device)}", "",
              f"SD1.5 UNet ({args.depth}), random weights, float32, latent {args.size}x{args.size} "
              f"({args.size * 8}x{args.size * 8} px), one prompt; timed steps per phase after a warm-up "
              "(bench/pipeline_cost.py for the method; '-': a memory-only run, one step per phase). Times: the fastest of a case's runs; memory: the "
              "least: tuning's peak above the bare loaded UNet (the patches' parameters, the tune node's block "
              "copy and AdamW's state included), inversion's and sampling's peak above the level before them plus "
              "the patches' parameters. Ratios: tuning and memory against Tune-A-Video, sampling against the "
              "plain UNet, at the same frames and checkpointing.", "",
              "Configurations (VRWKV Patch Model's choices): " + "; ".join(
                  f"**{name}** {', '.join(f'{k}={v}' for k, v in c.items())}" for name, c in CONFIGS.items() if c)
              + ".", ""]
    if args.note:
        header += [args.note, ""]
    base.with_suffix(".md").write_text(table(raw, header))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--size", type=int, default=8, help="latent size (pixels / 8)")
    ap.add_argument("--depth", choices=["shallow", "full"], default="full",
                    help="UNet depth: full SD1.5, or the 2-level SD1.5-layout UNet (one res block per level)")
    ap.add_argument("--configs", nargs="+", default=["plain", "tune-a-video", "shipped", "lean"],
                    choices=list(CONFIGS))
    ap.add_argument("--checkpointing", nargs="+", default=["on"], choices=["on", "off"])
    ap.add_argument("--steps", type=int, default=1, help="timed steps per phase (0: memory only, one step)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per case; the table keeps the fastest")
    ap.add_argument("--note", default="", help="a line added to the results (e.g. how busy the machine was)")
    ap.add_argument("--sampling-side-by-side", action="store_true",
                    help="instead: time sampling steps of --configs in one process, interleaved (first of --frames)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sampling_side_by_side:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        base = RESULTS / f"pipeline_cost_{device}_{args.depth}_{args.size * 8}px"
        times = sampling_side_by_side(args.configs, args.frames[0], args.size, args.depth, max(args.steps, 1),
                                      args.repeats)
        raw = load_raw(base)
        runs = sum(k.startswith(f"sampling side by side, {args.frames[0]} frames") for k in raw)
        raw[f"sampling side by side, {args.frames[0]} frames, run {runs + 1}"] = times
        write_results(raw, args, device, base)
        print(json.dumps(times))
        return
    if args.one:
        config, frames, ckpt = args.one
        print(json.dumps(one_case(config, int(frames), args.size, args.depth, ckpt == "on", args.steps)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = RESULTS / f"pipeline_cost_{device}_{args.depth}_{args.size * 8}px"
    RESULTS.mkdir(exist_ok=True)
    raw = load_raw(base)
    for repeat in range(args.repeats):           # configurations interleaved: a busy spell hits all alike
        for ckpt in args.checkpointing:
            for frames in args.frames:
                for config in args.configs:
                    cmd = [sys.executable, "-m", "bench.pipeline_cost", "--one", config, str(frames), ckpt,
                           "--size", str(args.size), "--depth", args.depth, "--steps", str(args.steps)]
                    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                    if out.returncode != 0:
                        print(f"{config} T={frames} ckpt {ckpt} failed:\n{out.stderr[-2000:]}", flush=True)
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    raw = load_raw(base)                 # what other invocations added meanwhile
                    raw.setdefault(case_key(config, frames, ckpt == "on"), []).append(r)
                    print(f"run {repeat + 1} ckpt {ckpt} T={frames:3d} {config:14s} " + ", ".join(
                        f"{p} {r[p]['step_s']} s {r[p]['above_bytes'] / 2**30:.2f} GiB" for p in PHASES), flush=True)
                    write_results(raw, args, device, base)


if __name__ == "__main__":
    main()
