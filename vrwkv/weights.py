"""VRWKV weights files: safetensors with the block layout and the training record.

Tensors: `vrwkv.<block param>`, and `base.<UNet key>` for tuned UNet weights as differences
from the weights they were tuned from (applied by ComfyUI's weight patching). Metadata:
`format`, `pack_version`, `layout` (the block spec), `info` (the training record; `base`
names the model tuned on). Written atomically, never over an existing file; never unpickled.
"""

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from .files import save_safetensors_atomic
from .tuning import step_frames
from .version import VERSION

FORMAT = "vrwkv-editor-weights/1"
EXTENSION = ".safetensors"


def resolve_inside(folder: str | Path, name: str) -> Path:
    """folder/name, refusing names that leave the folder (absolute, '..', links out)."""
    folder = Path(folder).resolve()
    path = (folder / name).resolve()
    if path == folder or folder not in path.parents:
        raise ValueError(f"weights name {name!r} points outside {folder}; use a plain file name or a sub-folder")
    return path


def save_weights(path: str | Path, blocks_state: dict, spec: dict, base_deltas: dict | None = None,
                 info: dict | None = None) -> Path:
    path = Path(path)
    if path.suffix != EXTENSION:
        path = path.with_name(path.name + EXTENSION)
    tensors = {f"vrwkv.{k}": v for k, v in blocks_state.items()}
    tensors.update({f"base.{k}": v for k, v in (base_deltas or {}).items()})
    metadata = {"format": FORMAT, "pack_version": VERSION, "layout": json.dumps(spec, sort_keys=True),
                "info": json.dumps(info or {}, sort_keys=True, default=str)}
    return save_safetensors_atomic(tensors, path, metadata)


def load_weights(path: str | Path):
    """(spec, blocks_state, base_deltas, info) from a file written by save_weights; a file
    tuned before `norm_frames` was recorded gets it from its training record."""
    path = Path(path)
    if path.suffix != EXTENSION:
        raise ValueError(f"{path.name}: VRWKV weights are {EXTENSION} files (pickled .pt/.ckpt files are never loaded)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"{path.name} is not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a VRWKV weights file (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}); save weights with VRWKV Save Weights or VRWKV Tune On Video")
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:  # checked here once, so the Bi-WKV kernels need not check every call
        raise ValueError(f"{path.name}: tensor {bad!r} holds non-finite values (the tuning that wrote it "
                         "diverged); tune again with a lower learning rate")
    spec, info = json.loads(meta["layout"]), json.loads(meta.get("info", "{}"))
    if "norm_frames" not in spec and info.get("frames"):
        spec["norm_frames"] = step_frames(int(info["frames"]), int(info.get("window") or 0))
    blocks = {k[len("vrwkv."):]: v for k, v in tensors.items() if k.startswith("vrwkv.")}
    base = {k[len("base."):]: v for k, v in tensors.items() if k.startswith("base.")}
    return spec, blocks, base, info


def check_state_matches(blocks_state: dict, expected: dict[str, torch.Size], source: str) -> None:
    """Raises ValueError naming the first key that is missing, extra or differently shaped."""
    for key, shape in expected.items():
        if key not in blocks_state:
            raise ValueError(f"{source}: missing tensor {key!r}; the file was saved for another block layout")
        if tuple(blocks_state[key].shape) != tuple(shape):
            raise ValueError(f"{source}: tensor {key!r} has shape {tuple(blocks_state[key].shape)}, the patched "
                             f"model needs {tuple(shape)}; the file was made for a different model or layout")
    extra = sorted(set(blocks_state) - set(expected))
    if extra:
        raise ValueError(f"{source}: unexpected tensor {extra[0]!r} (and {len(extra) - 1} more); "
                         "the file was saved for another block layout")


FINGERPRINT_SAMPLES = 16    # values read from each tensor


def unet_fingerprint(keys: Iterable[str], weight: Callable[[str], torch.Tensor]) -> str:
    """A 16-hex-digit id of the weights `weight(key)` gives (as the model computes, LoRAs
    applied): SHA-256 over each key, shape and FINGERPRINT_SAMPLES evenly spaced values in
    float16, so float16 and float32 loads agree. Fine-tunes, merges and LoRAs change whole
    tensors, so they change the id."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        tensor = weight(key).detach()
        flat = tensor.reshape(-1)
        count = min(FINGERPRINT_SAMPLES, flat.numel())
        index = torch.arange(count) * (flat.numel() - 1) // max(count - 1, 1)
        digest.update(f"{key}{tuple(tensor.shape)};".encode())
        digest.update(flat[index.to(flat.device)].to(torch.float16).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_base(base: dict) -> str:
    """'3fa2c1d07e5b9a44 (v1-5-pruned-emaonly.safetensors)' or the fingerprint alone."""
    return base["fingerprint"] + (f" ({base['checkpoint']})" if base.get("checkpoint") else "")


def base_mismatch(saved: dict | None, current: dict, source: str) -> str | None:
    """The warning for weights made on `saved` (a file's info["base"]) loaded onto `current`,
    or None when they match or the file predates fingerprints."""
    if not saved or saved.get("fingerprint") == current["fingerprint"]:
        return None
    return (f"{source} was tuned on another model: its base is {describe_base(saved)}, this MODEL is "
            f"{describe_base(current)}. It loads, but the edit may not reproduce the clip: connect the "
            "checkpoint (and LoRAs) it was tuned on, or tune again on this model. (The same checkpoint "
            "loaded in another weight precision, fp8 or bfloat16, also counts as another model.)")
