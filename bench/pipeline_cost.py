"""Pipeline cost: tuning, DDIM inversion and sampling steps of plain SD1.5, Tune-A-Video and
VRWKV configurations inside a real ComfyUI, every configuration in the same precision, and
the memory each phase needs above the loaded model.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.pipeline_cost --precision bf16 --size 64 \
        --frames 16 32 [--configs plain tune-a-video default] [--repeats 3] [--profile]
    ... --sampling-side-by-side --precision fp16      # sampling only, configurations interleaved

Configurations are names, resolved when the run starts:
- plain: SD1.5 with its attn1/attn2 to_q tuned;
- tune-a-video: baselines/tune_a_video.py, the faithful architecture (to_q and a temporal
  attention in every transformer block trained);
- tune-a-video-shipped: the same, but only the mid-block and decoder modules train: Tune-A-
  Video's reentrant gradient checkpointing leaves the encoder's trainable modules without
  gradients (its issues #18, #69), so as shipped backward never enters the encoder;
- default: config.DEFAULT, what VRWKV Patch Model builds with its widget defaults;
- paper: config.PAPER, the paper's block (4x channel mix, full projections, r/k/v unfused) at skip+mid,
  all levels;
- lean: config.LEAN (no channel mix, rank-1/4 projections, r/k/v fused); lean-cm1: with a 1x
  channel mix; lean-cm1-low: the 1x channel mix only at levels 0-1;
- default-mid: default with the blocks on the mid block only; default-cm1-low: default with
  lean-cm1-low's blocks;
- default-half: default with half_precision_sampling (a sampling-time choice).

Precision (--precision fp32 | bf16 | fp16): the UNet's weights in that dtype, and tuning as
VRWKV Tune On Video runs it: the trainer's compute dtype set to it, TuneSampler's autocast
(on below fp32), the tuned query projections in float32; the baselines' loop is that same
node's sampler. Each run records the dtype the UNet's output convolution produced and the
TF32 switches. The tune node draws a loss-curve image while it runs: here it is replaced by
a no-op for every configuration, so no configuration times a plot.

Gradient checkpointing as asked (ResBlocks, SpatialTransformers and VRWKV blocks
recomputed). Inversion is VRWKV DDIM Inversion (cfg 1), sampling VRWKV KSampler (DDIM) at
cfg 12.5 (cond and uncond in one batch), on the patched, untuned model. With --window W,
tuning draws windows of W frames (the tune node's window) and inversion and sampling run in
VRWKV Context Windows (W frames, overlap 4, carry): the long-clip path.

Timing: a warm-up call of one step, one call of one step and --repeats calls of two steps;
seconds per step = (two-step call - one-step call), so loading and set-up cancel out (median
and range over the repeats). Memory: peak allocated (CUDA, all cases in one process) or peak
resident set (CPU: every case in a fresh process, sampled every 5 ms), tuning above the bare
loaded UNet (the patches, the tune node's block copy and AdamW's state included), inversion
and sampling above the level before them plus the patches' parameters; on CUDA also the
peak reserved memory of the whole process. Raw runs accumulate in
bench/results/pipeline_cost_<device>_<depth>_<px>_<precision>.json; the table beside it
(.md) gives medians.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from . import load_pack, machine_name

load_pack()    # nothing in the pack imports ComfyUI at import time
from vrwkv_editor.vrwkv.config import DEFAULT  # noqa: E402

from .configs import CONFIGS

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "tune-a-video"
BASELINES = ("plain", "tune-a-video", "tune-a-video-shipped")
# name -> the VRWKV configuration (vrwkv/config.py), read when the run starts
VRWKV = {**CONFIGS, "default-half": DEFAULT.replace(half_precision_sampling=True)}
CONFIGS = BASELINES + tuple(VRWKV)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TRAINING_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "bfloat16"}  # the tune node's widget values
PHASES = ("tune", "invert", "sample")
OVERLAP = 4            # VRWKV Context Windows' overlap on the long-clip path (its default)


def node_defaults(node_class) -> dict:
    """The widget defaults of a node class (what a fresh node on the canvas holds)."""
    inputs = node_class.INPUT_TYPES()
    specs = {**inputs.get("required", {}), **inputs.get("optional", {})}
    return {name: spec[1]["default"] for name, spec in specs.items() if len(spec) > 1 and "default" in spec[1]}


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
        gc.collect()
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
            self.reserved = torch.cuda.max_memory_reserved()
        else:
            self.running = False
            self.thread.join()
            self.reserved = None
        self.above = self.peak - self.start


def timed_steps(run, repeats: int, model_level: int | None) -> dict:
    """Seconds per step of run(n) (n steps): a warm-up run(1), run(1), then `repeats` x run(2)
    (repeats 0: memory only, one run); and the peak bytes above `model_level` (default: the
    level at the start)."""
    def clock(n):
        t0 = time.perf_counter()
        run(n)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    with PeakMemory(model_level) as memory:
        run(1)                                   # warm-up: loading, compiling, allocator growth
        one = clock(1) if repeats else None
        steps = [clock(2) - one for _ in range(repeats)]
    return {"step_s": steps, "above_bytes": memory.above, "reserved_bytes": memory.reserved}


@contextlib.contextmanager
def record_unet_dtype(model, seen: set):
    """Adds to `seen` the dtype of every output of the UNet's last convolution while inside."""
    out = model.get_model_object("diffusion_model").out
    hook = out.register_forward_hook(lambda module, args, output: seen.add(str(output.dtype).replace("torch.", "")))
    try:
        yield
    finally:
        hook.remove()


def tf32_switches() -> str:
    return (f"matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
            f"cudnn {'on' if torch.backends.cudnn.allow_tf32 else 'off'}")


class Session:
    """One random-weight SD1.5 in ComfyUI (weights in the precision's dtype), the pack loaded
    as ComfyUI loads it, and latents and prompts per clip length."""

    def __init__(self, depth: str, size: int, precision: str):
        from .comfy_model import load_pack_in_comfy, random_sd15
        self.precision, self.dtype, self.size = precision, PRECISIONS[precision], size
        self.base = random_sd15(depth, dtype=self.dtype)
        load_pack_in_comfy()
        from vrwkv_editor.nodes import tune as tune_node
        # No configuration draws the tune node's loss curve while timed (the baselines have no plot).
        tune_node.loss_curve = lambda losses, title="": None
        tune_node.as_image_tensor = lambda image: None
        import comfy.model_management
        comfy.model_management.load_models_gpu([self.base], force_full_load=True)
        self.model_level = PeakMemory.level()    # the loaded UNet: what tuning is measured above
        self.context_bytes = 0                   # device memory outside the allocator: the CUDA context
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            self.context_bytes = total - free - torch.cuda.memory_reserved()

    def clip(self, frames: int):
        g = torch.Generator().manual_seed(frames)
        latent = {"samples": torch.randn(frames, 4, self.size, self.size, generator=g)}
        cond, uncond = ([[torch.randn(1, 77, 768, generator=g), {}]] for _ in range(2))
        return latent, cond, uncond

    def vrwkv_model(self, config: str):
        """The patched model of a VRWKV configuration, built as VRWKV Patch Model builds it."""
        from vrwkv_editor.nodes.patch_model import apply_vrwkv
        from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
        return apply_vrwkv(self.base, block_spec(unet_layout(self.base.get_model_object("diffusion_model")),
                                                 VRWKV[config]))

    def baseline(self, config: str, checkpointing: bool):
        """(model for inversion and sampling, trainer, trained parameters) of a baseline, with
        the tune node's precision handling: compute dtype, float32 query projections."""
        import comfy.utils
        from vrwkv_editor.nodes.trainer import float32_projection, query_weight_keys

        from baselines.tune_a_video import query_trainer, tune_a_video_comfy
        if config == "plain":
            model = self.base
            trainer, params = query_trainer(self.base, gradient_checkpointing=checkpointing)
        else:
            tav, trainer, params = tune_a_video_comfy(self.base, gradient_checkpointing=checkpointing)
            model = tav.apply(self.base)
        keys = query_weight_keys(trainer.get_model_object("diffusion_model"))
        for key in keys:
            module = key[:-len(".weight")]
            linear = comfy.utils.get_attr(trainer.model, module)
            trainer.add_object_patch(f"{module}.forward", float32_projection(linear))
        if config == "tune-a-video-shipped":
            # encoder modules frozen: autograd then never records (nor recomputes) the encoder
            frozen = {id(d) for key, d in zip(keys, params) if ".input_blocks." in key}
            frozen |= {id(p) for name, p in tav.temporal.module.named_parameters() if name.startswith("input_")}
            for p in params:
                p.requires_grad_(id(p) not in frozen)
            params = [p for p in params if p.requires_grad]
        trainer.set_model_compute_dtype(self.dtype)
        return model, trainer, params

    def case(self, config: str, frames: int, checkpointing: bool, repeats: int, window: int = 0,
             phases=PHASES) -> dict:
        """One configuration's phases (tuning always) on a clip of `frames` frames."""
        import comfy.model_management
        from vrwkv_editor.nodes.ddim import VRWKVDDIMInversion, VRWKVKSampler
        from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo
        from vrwkv_editor.nodes.windows import VRWKVContextWindows

        from baselines.tune_a_video import tune_in_comfy
        latent, cond, uncond = self.clip(frames)
        seen, state = set(), {}
        if config in BASELINES:
            def tuning(n):
                model, trainer, params = self.baseline(config, checkpointing)
                state.update(model=model, trained=sum(p.numel() for p in params),
                             patch_bytes=patch_bytes(model, self.base))
                with record_unet_dtype(trainer, seen):
                    tune_in_comfy(trainer, params, latent["samples"], cond, n, dtype=self.dtype)
        else:
            def tuning(n):
                with torch.inference_mode():
                    model = self.vrwkv_model(config)
                    blocks = find_vrwkv_patch(model).blocks
                    state.update(model=model, trained=sum(p.numel() for p in blocks.parameters()),
                                 patch_bytes=patch_bytes(model, self.base))
                    with record_unet_dtype(model, seen):
                        VRWKVTuneOnVideo().tune(model, latent, cond, n, 3e-5, 0, "vrwkv", checkpointing,
                                                TRAINING_DTYPE[self.precision], window=window)
        result = {"tune": timed_steps(tuning, repeats, self.model_level), "tune_unet_dtype": sorted(seen)}
        comfy.model_management.soft_empty_cache()
        model = state["model"]
        if window and frames > window:
            model = VRWKVContextWindows().apply(model, window, OVERLAP, True)[0]
        seen = set()
        with torch.inference_mode(), record_unet_dtype(model, seen):
            for phase, run in (("invert", lambda n: VRWKVDDIMInversion().invert(model, latent, cond, n, 1.0, 0,
                                                                                "invert", "")),
                               ("sample", lambda n: VRWKVKSampler().sample(model, 0, n, 12.5, cond, uncond, latent,
                                                                           1.0, 0.0))):
                if phase not in phases:
                    continue
                result[phase] = timed_steps(run, repeats, None)
                result[phase]["above_bytes"] += state["patch_bytes"]
        result.update(params=state["trained"], sample_unet_dtype=sorted(seen), tf32=tf32_switches(),
                      precision=self.precision, context_bytes=self.context_bytes,
                      machine=machine_name("cuda" if torch.cuda.is_available() else "cpu"))
        gc.collect()
        comfy.model_management.soft_empty_cache()
        return result

    def profile(self, config: str, frames: int, checkpointing: bool, top: int = 12) -> list:
        """The ops of one tuning step (after a warm-up step) by self device time, from torch.profiler."""
        from torch.profiler import ProfilerActivity, profile
        from vrwkv_editor.nodes.tune import VRWKVTuneOnVideo

        from baselines.tune_a_video import tune_in_comfy
        latent, cond, _ = self.clip(frames)
        if config in BASELINES:
            _, trainer, params = self.baseline(config, checkpointing)

            def step(n):
                tune_in_comfy(trainer, params, latent["samples"], cond, n, dtype=self.dtype)
        else:
            with torch.inference_mode():
                model = self.vrwkv_model(config)

            def step(n):
                with torch.inference_mode():
                    VRWKVTuneOnVideo().tune(model, latent, cond, n, 3e-5, 0, "vrwkv", checkpointing,
                                            TRAINING_DTYPE[self.precision])
        step(1)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            step(1)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        events = prof.key_averages()
        device = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        total = sum(getattr(e, device) for e in events) or 1
        rows = sorted(events, key=lambda e: getattr(e, device), reverse=True)[:top]
        return [{"op": e.key[:60], "ms": round(getattr(e, device) / 1e3, 2),
                 "share": f"{getattr(e, device) / total:.0%}", "calls": e.count} for e in rows]


def find_vrwkv_patch(model):
    from vrwkv_editor.nodes.common import find_patch
    return find_patch(model)


def patch_bytes(model, base) -> int:
    """Bytes of the parameters a configuration adds to the UNet (its patches' modules)."""
    patch = find_vrwkv_patch(model)
    if patch is not None:
        return sum(p.numel() * p.element_size() for p in patch.blocks.parameters())
    middle = model.model_options.get("transformer_options", {}).get("patches", {}).get("middle_patch", [])
    return sum(p.numel() * p.element_size() for m in middle if hasattr(m, "module") for p in m.module.parameters())


def sampling_side_by_side(session: Session, configs: list, frames: int, repeats: int) -> dict:
    """Seconds per sampling step (VRWKV KSampler, cfg 12.5) of every configuration on one UNet,
    interleaved round by round: the fairest time ratio a shared machine allows. Tune-A-Video's
    temporal attentions compute in the UNet's dtype, as its pipeline runs them."""
    import comfy.ldm.modules.attention
    from vrwkv_editor.nodes.ddim import VRWKVKSampler

    from baselines.tune_a_video import TuneAVideo
    latent, cond, uncond = session.clip(frames)
    models = {}
    with torch.inference_mode():
        for config in configs:
            if config == "plain":
                models[config] = session.base
            elif config == REFERENCE:
                tav = TuneAVideo(session.base.get_model_object("diffusion_model"),
                                 comfy.ldm.modules.attention.optimized_attention)
                tav.temporal.module.to(session.dtype)
                models[config] = tav.apply(session.base)
            else:
                models[config] = session.vrwkv_model(config)
        times = {config: [] for config in configs}
        for _ in range(repeats):
            for config, model in models.items():
                run = lambda n: VRWKVKSampler().sample(model, 0, n, 12.5, cond, uncond, latent, 1.0, 0.0)  # noqa: E731
                times[config] += timed_steps(run, 1, None)["step_s"]
    return times


def case_key(config, frames, checkpointing, window=0) -> str:
    return f"{config}|{frames}|{'on' if checkpointing else 'off'}" + (f"|w{window}" if window else "")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(runs: list) -> dict:
    """Median and range of each phase's seconds per step over a case's runs, least memory."""
    out = {"params": runs[-1]["params"], "runs": len(runs), "dtype": "/".join(runs[-1].get("tune_unet_dtype", []))}
    for phase in PHASES:
        measured = [r[phase] for r in runs if phase in r]
        steps = [s for m in measured for s in m["step_s"]]
        out[phase] = {"step_s": median(steps), "lo": min(steps, default=None), "hi": max(steps, default=None),
                      "above_bytes": min((m["above_bytes"] for m in measured), default=None),
                      "reserved_bytes": max((m.get("reserved_bytes") or 0 for m in measured), default=0) or None}
    return out


def table(raw: dict, header: list, times: bool = True) -> str:
    """Markdown: every case, ratios against Tune-A-Video (tuning, memory) and the plain UNet
    (sampling) at the same frames, checkpointing and window; times left out (-) when the
    machine was busy."""
    cases = {k: v for k, v in raw.items() if "|" in k}
    rows = {k: summary(v) for k, v in cases.items()}
    lines = header + [
        "| ckpt | frames | config | trained M | UNet computes in | tune s/step (range) | tune GiB | tune time / TAV | "
        "tune mem / TAV | invert s/step | sample s/step | sample GiB | sample time / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(CONFIGS)}

    def sort_key(key):
        parts = key.split("|")
        return parts[2] == "off", len(parts) > 3, int(parts[1]), order.get(parts[0], 99)
    for key in sorted(rows, key=sort_key):
        parts = key.split("|")
        config, frames, ckpt = parts[:3]
        rest = "|".join([""] + parts[3:]) if len(parts) > 3 else ""
        r = rows[key]
        tav, plain = rows.get(f"{REFERENCE}|{frames}|{ckpt}{rest}"), rows.get(f"plain|{frames}|{ckpt}{rest}")

        def ratio(ref, phase, field):
            if field == "step_s" and not times:
                return "-"
            mine, theirs = r[phase][field], ref[phase][field] if ref else None
            return f"{mine / theirs:.2f}x" if mine is not None and theirs else "-"

        def secs(phase, spread=False):
            p = r[phase]
            if p["step_s"] is None or not times:
                return "-"
            return f"{p['step_s']:.3g}" + (f" ({p['lo']:.3g}-{p['hi']:.3g})" if spread and p["lo"] != p["hi"] else "")

        def gib(phase):
            return "-" if r[phase]["above_bytes"] is None else f"{r[phase]['above_bytes'] / 2**30:.2f}"

        lines.append(
            f"| {ckpt} | {frames}{' (window ' + parts[3][1:] + ')' if len(parts) > 3 else ''} | {config} | "
            f"{r['params'] / 1e6:.1f} | {r['dtype']} | {secs('tune', True)} | {gib('tune')} | "
            f"{ratio(tav, 'tune', 'step_s')} | {ratio(tav, 'tune', 'above_bytes')} | {secs('invert')} | "
            f"{secs('sample')} | {gib('sample')} | {ratio(plain, 'sample', 'step_s')} |")
    for key, value in raw.items():
        if key.startswith("sampling side by side"):
            times = {c: median(t) for c, t in value["times"].items()}
            lines += ["", f"{key} (one process, configurations interleaved; median of {value['repeats']} rounds, "
                          f"UNet weights and compute in {value['unet_dtype']}):", "",
                      "| config | s/step (range) | / plain | / Tune-A-Video |", "|---|---|---|---|"]
            lines += [f"| {c} | {t:.3g} ({min(value['times'][c]):.3g}-{max(value['times'][c]):.3g}) | "
                      + " | ".join(f"{t / times[ref]:.2f}x" if ref in times else "-" for ref in ("plain", REFERENCE))
                      + " |" for c, t in times.items()]
        if key.startswith("profile"):
            lines += ["", f"{key}: top ops of one tuning step by self time on the device (CUDA; CPU: CPU time)", ""]
            for config, ops in value.items():
                lines += [f"- **{config}**: " + "; ".join(f"{o['op']} {o['ms']} ms ({o['share']})" for o in ops[:8])]
    return "\n".join(lines) + "\n"


def results_base(device: str, depth: str, size: int, precision: str, folder: Path = RESULTS) -> Path:
    return folder / f"pipeline_cost_{device}_{depth}_{size * 8}px_{precision}"


def load_raw(base: Path) -> dict:
    path = base.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(raw: dict, args, device: str, base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(raw, indent=1, sort_keys=True))
    tmp.replace(base.with_suffix(".json"))
    header = [f"# Pipeline cost: {machine_name(device)}, {args.precision}", "",
              f"SD1.5 UNet ({args.depth}), random weights stored and computed in {args.precision} (tuning as VRWKV "
              f"Tune On Video runs it, for every configuration: compute dtype {args.precision}, autocast below fp32, "
              f"tuned query projections in float32; the column 'UNet computes in' is what its output convolution "
              f"produced), latent {args.size}x{args.size} ({args.size * 8}x{args.size * 8} px), one prompt; "
              f"TF32: {tf32_switches()}. Seconds per step: median over the repeats (range in brackets), timed "
              "after a warm-up (bench/pipeline_cost.py). Memory: tuning's peak above the bare loaded UNet (the "
              "patches, the tune node's block copy and AdamW's state included), inversion's and sampling's above "
              "the level before them plus the patches' parameters. Ratios at the same frames and checkpointing: "
              "tuning and memory against Tune-A-Video, sampling against the plain UNet. No configuration draws "
              "the tune node's loss curve while timed.", "",
              "Configurations: plain (to_q tuned); tune-a-video (faithful: encoder, mid and decoder modules "
              "train); tune-a-video-shipped (mid and decoder only, as its reentrant checkpointing leaves it); "
              "default (VRWKV Patch Model's widget defaults at run time); paper (the paper's block); lean (no "
              "channel mix, rank-1/4 projections, r/k/v fused); lean-cm1 (lean with a 1x channel mix); lean-cm1-low "
              "(that channel mix only at levels 0-1); default-mid (default, blocks on the mid block only); "
              "default-cm1-low (default with lean-cm1-low's blocks).", ""]
    if args.note:
        header += [args.note, ""]
    base.with_suffix(".md").write_text(table(raw, header, times=not args.busy))


def planned_cases(args) -> list:
    """(checkpointing, frames, config, window) of every case: --case entries, else every
    configuration at every length."""
    if args.case:
        cases = []
        for spec in args.case:
            config, frames, *rest = spec.split(":")
            if config not in CONFIGS:
                raise SystemExit(f"pipeline_cost: unknown configuration {config!r} in --case {spec}; one of {CONFIGS}")
            window, repeats = (int(rest[0]) if rest else 0), (int(rest[1]) if len(rest) > 1 else args.repeats)
            cases += [(ckpt, int(frames), config, window, repeats) for ckpt in args.checkpointing]
        return cases
    return [(ckpt, frames, config, args.window, args.repeats) for ckpt in args.checkpointing for frames in args.frames
            for config in args.configs]


def run_cases(args, device: str, base: Path) -> None:
    """Every case, --runs times: in this process on CUDA (the allocator's peaks reset per
    phase) or with --in-process, else a fresh process per case (the CPU's resident set only
    grows)."""
    session = Session(args.depth, args.size, args.precision) if device == "cuda" or args.in_process else None
    cases = planned_cases(args)
    for repeat in range(args.runs):
        for ckpt, frames, config, window, repeats in cases:
            if session is not None:
                r = session.case(config, frames, ckpt == "on", repeats, window, args.phases)
            else:
                cmd = [sys.executable, "-m", "bench.pipeline_cost", "--one", config, str(frames), ckpt, "--size",
                       str(args.size), "--depth", args.depth, "--repeats", str(repeats), "--precision",
                       args.precision, "--window", str(window), "--phases", *args.phases]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                if out.returncode != 0:
                    print(f"{config} T={frames} ckpt {ckpt} failed:\n{out.stderr[-2000:]}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
            raw = load_raw(base)                 # what other invocations added meanwhile
            raw.setdefault(case_key(config, frames, ckpt == "on", window), []).append(r)
            write_results(raw, args, device, base)
            print(f"run {repeat + 1} ckpt {ckpt} T={frames:3d} w={window} {config:22s} " + ", ".join(
                f"{p} {median(r[p]['step_s'])} s {r[p]['above_bytes'] / 2**30:.2f} GiB" for p in PHASES if p in r),
                flush=True)
    if args.profile and session is not None:
        ckpt, frames = cases[0][0], cases[0][1]
        configs = dict.fromkeys(c for _, f, c, w, _ in cases if f == frames and not w and c != "default-half")
        raw = load_raw(base)
        raw[f"profile, {frames} frames"] = {c: session.profile(c, frames, ckpt == "on") for c in configs}
        write_results(raw, args, device, base)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--size", type=int, default=8, help="latent size (pixels / 8)")
    ap.add_argument("--depth", choices=["shallow", "full"], default="full",
                    help="UNet depth: full SD1.5, or the 2-level SD1.5-layout UNet (one res block per level)")
    ap.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    ap.add_argument("--configs", nargs="+", default=["plain", "tune-a-video", "tune-a-video-shipped", "default"],
                    choices=CONFIGS)
    ap.add_argument("--checkpointing", nargs="+", default=["on"], choices=["on", "off"])
    ap.add_argument("--repeats", type=int, default=3, help="timed two-step calls per phase (0: memory only)")
    ap.add_argument("--runs", type=int, default=1, help="times every case runs (fresh processes on the CPU)")
    ap.add_argument("--window", type=int, default=0, help="frames per tuning window and per Context Windows call")
    ap.add_argument("--case", nargs="+", metavar="CONFIG:FRAMES[:WINDOW[:REPEATS]]",
                    help="run these cases instead of every --configs at every --frames")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES,
                    help="phases to time (tuning always runs: the other phases use its model)")
    ap.add_argument("--profile", action="store_true", help="also profile one tuning step of each configuration")
    ap.add_argument("--in-process", action="store_true",
                    help="run every case in this process on the CPU too (faster; CPU memory figures then overlap)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for the results files")
    ap.add_argument("--note", default="", help="a line added to the results (e.g. how busy the machine was)")
    ap.add_argument("--busy", action="store_true",
                    help="the machine was shared while timing: the table shows memory only (the JSON keeps the times)")
    ap.add_argument("--sampling-side-by-side", action="store_true",
                    help="instead: sampling steps of --configs in one process, interleaved (first of --frames)")
    ap.add_argument("--render", action="store_true", help="only rewrite the table (.md) from the results (.json)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = results_base(device, args.depth, args.size, args.precision, args.results)
    if args.render:
        write_results(load_raw(base), args, device, base)
        return
    if args.one:
        config, frames, ckpt = args.one
        session = Session(args.depth, args.size, args.precision)
        print(json.dumps(session.case(config, int(frames), ckpt == "on", args.repeats, args.window, args.phases)))
        return
    if args.sampling_side_by_side:
        session = Session(args.depth, args.size, args.precision)
        times = sampling_side_by_side(session, args.configs, args.frames[0], max(args.repeats, 1))
        raw = load_raw(base)
        runs = sum(k.startswith(f"sampling side by side, {args.frames[0]} frames") for k in raw)
        raw[f"sampling side by side, {args.frames[0]} frames, run {runs + 1}"] = {
            "times": times, "repeats": max(args.repeats, 1), "unet_dtype": args.precision, "tf32": tf32_switches()}
        write_results(raw, args, device, base)
        print(json.dumps(times))
        return
    run_cases(args, device, base)


if __name__ == "__main__":
    main()
