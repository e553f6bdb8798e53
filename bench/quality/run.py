"""Runs the protocol: each method x clip x frame count x tuning seed is one unit, which tunes
once and runs both tracks on the tuned model:
- generation (Tune-A-Video's one-shot task): the source prompt (and with gen_prompts "all"
  each edit prompt) sampled from fresh noise, independent per frame and (for the prompts in
  `shared`) one noise shared by every frame, once per sampling seed;
- edit: DDIM inversion with the source prompt, each edit prompt sampled from it, and the
  reconstruction (source prompt, cfg 1).
Units are appended to a JSON-lines file as they finish, keyed by everything that decides
their result, so an interrupted or extended run redoes nothing; every frame of each prompt's
first sample is cached (uint8) for the picture strip.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from toyworld.model import load_model
from toyworld.pipeline import NOISES, Method, Settings, edit_tuned, generate, tune_method

from toyworld.fidelity import as_image_batch

from .measures import Source, measure, metrics
from .methods import NODE_STEPS, method as method_by_name
from .worlds import get_world

TRACKS = ("generation", "edit")


@dataclass(frozen=True)
class Protocol:
    world: str = "flat"
    clips: int = 3
    frames: tuple = (8,)
    tune_seeds: tuple = (33,)
    sample_seeds: tuple = (1000, 1001, 1002)
    tune_steps: int = NODE_STEPS
    ddim_steps: int = 20
    cfg: float = 4.0
    tracks: tuple = TRACKS
    gen_prompts: str = "all"          # "source": the source prompt only; "all": and every edit prompt
    shared: str = "source"            # prompts also sampled from shared noise: "none", "source" or "all"

    def __post_init__(self):
        if not set(self.tracks) <= set(TRACKS) or not self.tracks:
            raise ValueError(f"tracks must be among {TRACKS}, got {self.tracks}")
        if self.gen_prompts not in ("source", "all") or self.shared not in ("none", "source", "all"):
            raise ValueError("gen_prompts is 'source' or 'all'; shared is 'none', 'source' or 'all'")


@dataclass
class Unit:
    spec: str            # the method's name on the command line ("tav@1e-3")
    method: Method
    case: int
    frames: int
    tune_seed: int
    protocol: Protocol = field(repr=False)

    def key(self) -> str:
        """Everything that decides the unit's numbers (the protocol's other units aside)."""
        p = self.protocol
        # BlockConfig fields at their first value are left out: results written before they existed keep their keys
        method = repr(self.method).replace(", frame_attention='self'", "").replace(", end_percent=1.0", "")
        method = method.replace(", channel_mix_pad='zero'", "").replace(", edit_end_percent=None", "")
        return json.dumps([p.world, method, get_world(p.world).cases[self.case].name, self.frames,
                           self.tune_seed, p.tune_steps, p.ddim_steps, p.cfg, list(p.sample_seeds), list(p.tracks),
                           p.gen_prompts, p.shared])


def units(specs: list, protocol: Protocol) -> list:
    """Every unit, in an order that fills the table evenly (frames, then tuning seed, then
    clip, then method); untuned methods get the first tuning seed only (nothing to seed)."""
    out = []
    for frames in protocol.frames:
        for seed in protocol.tune_seeds:
            for case in range(protocol.clips):
                for spec in specs:
                    m = method_by_name(spec)
                    if m.kind != "plain" or seed == protocol.tune_seeds[0]:
                        out.append(Unit(spec, m, case, frames, seed, protocol))
    return out


def _round(value):
    return value if not isinstance(value, float) or not np.isfinite(value) else float(f"{value:.5g}")


def run_unit(unit: Unit, model, cache: Path | None) -> dict:
    p = unit.protocol
    world = get_world(p.world)
    case = world.cases[unit.case]
    clip = case.make(unit.frames)
    source = Source(clip, world.detect)
    settings = Settings(tune_steps=p.tune_steps, ddim_steps=p.ddim_steps, cfg=p.cfg, seed=unit.tune_seed)
    tuned = tune_method(model, unit.method, clip, case.source_prompt, settings)
    rows, first = [], {}
    if "generation" in p.tracks:
        prompts = [(case.source_prompt, case.source_named, "source")]
        if p.gen_prompts == "all":
            prompts += [(prompt, named, "edit") for prompt, named in case.edits]
        for prompt, named, role in prompts:
            noises = NOISES if p.shared == "all" or (p.shared == "source" and role == "source") else NOISES[:1]
            for noise in noises:
                for seed in p.sample_seeds:
                    frames = generate(tuned, prompt, tuple(clip.shape), settings, seed, noise)
                    rows.append({"track": "generation", "prompt": prompt, "role": role, "noise": noise, "seed": seed,
                                 **measure(frames, source, named)})
                    first.setdefault(f"generation {noise}: {prompt}", frames)
    if "edit" in p.tracks:
        out = edit_tuned(tuned, clip, case.source_prompt, [prompt for prompt, _ in case.edits], settings)
        recon = metrics.psnr(source.images, as_image_batch(out["reconstruction"]))
        for prompt, named in case.edits:
            rows.append({"track": "edit", "prompt": prompt, "role": "edit", "recon_psnr": recon,
                         **measure(out["edits"][prompt], source, named)})
            first.setdefault(f"edit: {prompt}", out["edits"][prompt])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        images = {k: ((v.clamp(-1, 1) + 1) * 127.5).round().byte().numpy() for k, v in first.items()}
        np.savez_compressed(cache_file(cache, unit.key()), source=((clip + 1) * 127.5).round().byte().numpy(),
                            names=np.array(list(images)), **{f"img{i}": v for i, v in enumerate(images.values())})
    return {"key": unit.key(), "spec": unit.spec, "method": unit.method.name, "kind": unit.method.kind,
            "case": case.name, "frames": unit.frames, "tune_seed": unit.tune_seed, "tune_s": tuned.tune_s,
            "moved": tuned.moved, "final_loss": float(np.mean(tuned.losses[-20:])) if tuned.losses else None,
            "rows": [{k: _round(v) for k, v in r.items()} for r in rows]}


def cache_file(cache: Path, key: str) -> Path:
    return cache / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")


def cached_images(cache: Path, key: str) -> dict | None:
    """{"source": clip, name: frames, ...} as (T, 3, H, W) in [-1, 1], or None if not cached."""
    path = cache_file(cache, key)
    if not path.exists():
        return None
    with np.load(path) as f:
        images = {"source": f["source"], **{str(n): f[f"img{i}"] for i, n in enumerate(f["names"])}}
    return {k: torch.from_numpy(v).float() / 127.5 - 1 for k, v in images.items()}


def load_results(path: Path) -> dict:
    """key -> unit record, from a results file (absent: none)."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in records}


def run(specs: list, protocol: Protocol, path: Path, cache: Path | None = None, on_unit=None) -> dict:
    """Runs every unit not yet in `path`, appending each as it finishes; returns all records
    of this protocol's units (key -> record). `on_unit(record, done, total)` after each."""
    torch.set_num_threads(1)
    todo = units(specs, protocol)
    done = load_results(path)
    model, _ = load_model(get_world(protocol.world).weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, unit in enumerate(todo, 1):
        if unit.key() in done:
            continue
        start = time.perf_counter()
        record = run_unit(unit, model, cache)
        record["wall_s"] = time.perf_counter() - start
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[record["key"]] = record
        if on_unit:
            on_unit(record, i, len(todo))
    return {u.key(): done[u.key()] for u in todo}

