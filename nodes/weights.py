"""VRWKV Save Weights / VRWKV Load Weights: tuned blocks (and tuned UNet weights) as
safetensors files in models/vrwkv."""

from ..vrwkv.version import VERSION
from ..vrwkv.weights import resolve_inside, save_weights
from .common import CATEGORY, require_patch, weights_files, weights_folder
from .fingerprint import check_base
from .patch_model import apply_vrwkv, load_weights_file


def save_patch(model, name: str, node: str = "VRWKV Save Weights") -> str:
    """Writes the MODEL's VRWKV blocks to models/vrwkv/<name>.safetensors, or <name>_00001...
    when that file exists (never replaced); returns the path written."""
    patch = require_patch(model, node)
    name = name.strip()
    if not name:
        raise ValueError(f"{node}: give the weights a file name")
    path = resolve_inside(weights_folder(), name if name.endswith(".safetensors") else name + ".safetensors")
    info = {**patch.info, "pack_version": VERSION, **({"base": patch.base} if patch.base else {})}
    return str(save_weights(path, patch.blocks.state_dict(), patch.blocks.spec, patch.base_deltas, info))


class VRWKVSaveWeights:
    DESCRIPTION = ("Saves the VRWKV blocks of a patched (usually tuned) MODEL, with any tuned UNet weights and "
                   "the training record, to models/vrwkv as a safetensors file. Reload it with VRWKV Load "
                   "Weights to re-edit the clip without tuning again.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A MODEL with VRWKV blocks (from VRWKV Patch Model or VRWKV Tune On Video)."}),
            "name": ("STRING", {"default": "vrwkv_edit", "tooltip":
                     "File name inside models/vrwkv (sub-folders allowed). An existing file is never "
                     "replaced: the name then gets the next free counter (_00001, ...); the output says "
                     "which file was written."}),
        }}

    def save(self, model, name):
        path = save_patch(model, name)
        return {"ui": {"text": [path]}, "result": (path,)}


class VRWKVLoadWeights:
    DESCRIPTION = ("Patches an SD1.5 MODEL with VRWKV blocks loaded from models/vrwkv (the layout comes from "
                   "the file), applying any tuned UNet weights it holds.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The SD1.5 model with the loaded VRWKV blocks (the input MODEL is left unchanged).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The SD1.5 model the weights were tuned from (from Load Checkpoint)."}),
            "weights": (weights_files(), {"tooltip": "A VRWKV weights file in models/vrwkv. Loading it onto "
                        "another model than it was tuned on (another checkpoint, or without its LoRAs) "
                        "warns, naming both."}),
        }, "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}}

    def load(self, model, weights, prompt=None, unique_id=None):
        spec, state, base, info = load_weights_file(weights)
        patched = apply_vrwkv(model, spec, state, base, info, source="VRWKV Load Weights", prompt=prompt,
                              node_id=unique_id)
        warning = check_base(patched, info, weights, unique_id)
        return {"ui": {"text": [warning]}, "result": (patched,)} if warning else (patched,)
