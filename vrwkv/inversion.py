"""The inverted LATENT: ``{"samples": x / scale, LATENT_KEY: Inversion.to_dict()}``, x the
sigma-space latent at ``sigmas[0]`` (vrwkv/ddim.py), from which sampling over ``sigmas``
with no added noise regenerates the source. Core SaveLatent/LoadLatent drop the metadata,
so files go through ``save_inversion``/``load_inversion``.
"""

import json
import os
from dataclasses import asdict, dataclass

import torch
from safetensors import safe_open

from .files import save_safetensors_atomic

LATENT_KEY = "vrwkv_ddim_inversion"
FILE_FORMAT = "vrwkv-ddim-inversion/1"
SCHEDULE = "ddim leading, steps_offset 1, final alphas_cumprod[0]"
_SIGMA_RTOL = 1e-4  # float32 round trips through JSON and devices stay far inside this
_SAME_CLIP_RTOL = 0.02  # the same clip re-encoded elsewhere is far closer; another clip is O(1) off
REDO = "set mode to 'invert and save' to invert this clip again"


@dataclass(frozen=True)
class Inversion:
    """How an inverted latent was made: `sigmas` in sampling order (it sits at sigmas[0]);
    `rms` of its samples reveals samples changed after inversion."""

    steps: int
    cfg: float
    refine: int
    sigmas: tuple
    rms: float
    schedule: str = SCHEDULE

    @classmethod
    def of(cls, samples: torch.Tensor, steps: int, cfg: float, refine: int, sigmas: torch.Tensor) -> "Inversion":
        return cls(int(steps), float(cfg), int(refine), tuple(float(s) for s in sigmas), _rms(samples))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Inversion":
        return cls(int(d["steps"]), float(d["cfg"]), int(d["refine"]), tuple(float(s) for s in d["sigmas"]),
                   float(d["rms"]), str(d["schedule"]))


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def check_sigmas_match(info: Inversion, sigmas: torch.Tensor, steps: int, denoise: float) -> None:
    """ValueError unless the sampler would start exactly where the inverted latent sits."""
    same = len(info.sigmas) == len(sigmas) and all(_close(a, float(b), _SIGMA_RTOL) for a, b in zip(info.sigmas, sigmas))
    if same:
        return
    if (steps, denoise) != (info.steps, 1.0):
        raise ValueError(f"the inverted latent was made with {info.steps} DDIM steps, but the sampler "
                         f"is set to steps={steps}, denoise={denoise}: set steps to {info.steps} and "
                         "denoise to 1.0, or invert again with the steps you want.")
    raise ValueError("the model's noise schedule differs from the one the latent was inverted with "
                     f"(sigma {sigmas[0]:.4f} vs {info.sigmas[0]:.4f} at the start): invert with the "
                     "same model you sample with.")


def inversion_of(latent: dict, shape: tuple) -> Inversion:
    """The metadata of an inverted LATENT, checked against its samples and `shape`."""
    if LATENT_KEY not in latent:
        raise ValueError("the inverted_latent input carries no VRWKV inversion metadata: connect the "
                         "LATENT output of 'VRWKV DDIM Inversion' (core SaveLatent/LoadLatent drop the "
                         "metadata; use the inversion node's 'invert and save' / 'load saved' modes).")
    info = Inversion.from_dict(latent[LATENT_KEY])
    samples = latent["samples"]
    if tuple(samples.shape) != tuple(shape):
        raise ValueError(f"the inverted latent has shape {tuple(samples.shape)} but latent_image has "
                         f"{tuple(shape)}: connect the clip that was inverted as latent_image.")
    if not _close(_rms(samples), info.rms, _SIGMA_RTOL):
        raise ValueError("the inverted latent's samples changed after inversion (a node between the "
                         "inversion and this sampler edited them): connect the inversion output directly.")
    return info


def inversion_path(folder: str, name: str) -> str:
    """`folder`/`name`.safetensors, for a plain file name only."""
    base = name.strip()
    if base.endswith(".safetensors"):
        base = base[: -len(".safetensors")]
    if not base or base.startswith(".") or any(c in base for c in '/\\:*?"<>|'):
        raise ValueError(f"save_name {name!r} is not a plain file name: use letters, digits, '-' "
                         "or '_' (no folders, no leading dot).")
    return os.path.join(folder, base + ".safetensors")


def save_inversion(path: str, inverted: torch.Tensor, source: torch.Tensor, info: Inversion) -> str:
    """Writes the inverted and source latents atomically, never over an existing file
    (vrwkv/files.py); returns the path written."""
    metadata = {"format": FILE_FORMAT, "inversion": json.dumps(info.to_dict()),
                "shape": json.dumps(list(inverted.shape))}
    return str(save_safetensors_atomic({"inverted": inverted.float(), "source": source.float()}, path, metadata))


def load_inversion(path: str) -> tuple:
    """(inverted, source, Inversion) from a file written by `save_inversion`."""
    if not os.path.isfile(path):
        raise ValueError(f"no saved inversion at {path}: run once with mode 'invert and save'.")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a VRWKV DDIM inversion file (format "
                             f"{metadata.get('format')!r}): choose another save_name or {REDO}.")
        return f.get_tensor("inverted"), f.get_tensor("source"), Inversion.from_dict(json.loads(metadata["inversion"]))


def check_saved(path: str, saved_source: torch.Tensor, info: Inversion, source: torch.Tensor, steps: int,
                cfg: float, refine: int, sigmas: torch.Tensor) -> None:
    """ValueError unless a saved inversion was made from `source` with these settings."""
    if tuple(saved_source.shape) != tuple(source.shape):
        raise ValueError(f"{path} was inverted from a latent of shape {tuple(saved_source.shape)}, this "
                         f"one is {tuple(source.shape)}: {REDO}.")
    diff = (saved_source.double() - source.detach().double().cpu()).norm() / source.double().norm().clamp(min=1e-12)
    if diff > _SAME_CLIP_RTOL:
        raise ValueError(f"{path} was inverted from a different clip (relative difference "
                         f"{diff.item():.3g}): {REDO}.")
    if info.steps != steps or not _close(info.cfg, cfg, 1e-6) or info.refine != refine:
        raise ValueError(f"{path} was inverted with steps={info.steps}, cfg={info.cfg}, refine={info.refine}; "
                         f"this node asks for steps={steps}, cfg={cfg}, refine={refine}: set those values or {REDO}.")
    check_sigmas_match(info, sigmas, steps, 1.0)
