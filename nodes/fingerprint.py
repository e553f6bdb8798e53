"""Which model a MODEL is, for the weights files' base check: its UNet's fingerprint
(vrwkv/weights.unet_fingerprint) over the weights it computes with (the checkpoint's,
with LoRAs and other weight patches applied: a LoRA is part of the base a file is tuned
on), and the checkpoint's file name where the prompt shows it."""

import weakref

import torch

from ..vrwkv.weights import base_mismatch, unet_fingerprint
from .common import find_patch, log, show_on_node

UNET = "diffusion_model."
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # BaseModel -> {patches_uuid: fingerprint}


def model_fingerprint(model) -> str:
    """The fingerprint of a MODEL (ModelPatcher), computed once per set of weight patches."""
    known = _cache.setdefault(model.model, {})
    if model.patches_uuid not in known:
        import comfy.lora
        patches = model.get_key_patches(UNET)      # the unpatched weight first, then this MODEL's patches

        def weight(key):
            (original, convert), *applied = patches[key]
            if not applied:
                return original
            return comfy.lora.calculate_weight(applied, convert(original.to(torch.float32, copy=True), inplace=True), key)

        known[model.patches_uuid] = unet_fingerprint(patches, weight)
    return known[model.patches_uuid]


def model_source(prompt: dict | None, node_id, input_name: str = "model") -> str | None:
    """'model.safetensors + LoRA style.safetensors (0.8)': the loader the node's MODEL input
    comes from in the prompt (following MODEL inputs upstream), with the LoRAs on the way;
    None where the prompt does not show it."""
    node, loras, seen = (prompt or {}).get(str(node_id)), [], set()
    link = node["inputs"].get(input_name) if node else None
    while isinstance(link, list) and str(link[0]) not in seen:
        seen.add(str(link[0]))
        node = prompt.get(str(link[0]))
        if node is None:
            return None
        inputs = node.get("inputs", {})
        if isinstance(inputs.get("lora_name"), str):
            strength = inputs.get("strength_model")
            loras.append(f"LoRA {inputs['lora_name']}" + (f" ({strength:g})" if isinstance(strength, (int, float)) else ""))
        for key in ("ckpt_name", "unet_name"):
            if isinstance(inputs.get(key), str):
                return " + ".join([inputs[key]] + loras[::-1])
        link = inputs.get("model")
    return None


def model_base(model, prompt=None, node_id=None) -> dict:
    """{"fingerprint", "checkpoint"} of the MODEL a node received."""
    return {"fingerprint": model_fingerprint(model), "checkpoint": model_source(prompt, node_id)}


def check_base(patched, info: dict | None, weights_name: str, node_id=None) -> str | None:
    """Warns (log and the node's text) when weights made on another model were applied to
    `patched`; returns the warning, or None when the bases match or the file has none."""
    warning = base_mismatch((info or {}).get("base"), find_patch(patched).base, weights_name)
    if warning:
        log.warning(f"VRWKV: {warning}")
        show_on_node(node_id, warning)
    return warning
