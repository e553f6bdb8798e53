"""Helpers shared by the nodes: the SD1.5 check, finding the pack's patch on a MODEL,
the models/vrwkv folder. ComfyUI modules are imported inside the functions."""

import logging
import os

import torch

from ..vrwkv import patch as patch_location
from ..vrwkv.patch import VRWKVPatch

log = logging.getLogger("vrwkv_editor")
CATEGORY = "VRWKV-Editor"
FOLDER = "vrwkv"
# What lowers the memory of every VRWKV node, wherever it runs out.
MEMORY_KNOBS = ("set resolution to 'half and below' (or lower) in VRWKV Patch Model: the high-resolution "
                "levels hold most tokens", "run long clips through VRWKV Context Windows (e.g. window 16)",
                "edit fewer frames, or smaller ones")
SD15_UNET = {"context_dim": 768, "model_channels": 320, "in_channels": 4, "adm_in_channels": None}


def require_sd15(model, node: str) -> None:
    """Raises ValueError unless the MODEL is SD1.5-shaped (what the blocks are built for)."""
    config = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", None)
    if not isinstance(config, dict):
        raise ValueError(f"{node}: the input is not a diffusion MODEL from a checkpoint loader")
    wrong = {k: config.get(k) for k, v in SD15_UNET.items() if config.get(k) != v}
    if wrong or config.get("use_temporal_attention"):
        name = type(model.model.model_config).__name__
        found = ", ".join(f"{k}={v}" for k, v in wrong.items()) or "temporal attention"
        raise ValueError(f"{node} needs an SD1.5 model (UNet with 320 base channels, 768-d text context, "
                         f"4 latent channels, no extra conditioning); this MODEL is {name} ({found}). "
                         "Load an SD1.5 checkpoint (or a fine-tune of SD1.5).")


def find_patch(model) -> VRWKVPatch | None:
    """The VRWKV patch registered on a MODEL (ModelPatcher), if any."""
    return patch_location.find_patch(model.model_options.get("transformer_options", {}))


def replace_patch(model, old: VRWKVPatch, new: VRWKVPatch) -> None:
    """Registers `new` on the MODEL (a clone of the one `old` came with) in `old`'s place."""
    patch_location.replace_patch(model.model_options["transformer_options"], old, new)


def require_patch(model, node: str) -> VRWKVPatch:
    patch = find_patch(model)
    if patch is None:
        raise ValueError(f"{node}: this MODEL has no VRWKV blocks; pass it through VRWKV Patch Model "
                         "(or VRWKV Load Weights) first")
    return patch


def weights_folder() -> str:
    """models/vrwkv, registered with ComfyUI's folder_paths on first use."""
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, FOLDER)
        os.makedirs(path, exist_ok=True)
        folder_paths.folder_names_and_paths[FOLDER] = ([path], {".safetensors"})
    return folder_paths.get_folder_paths(FOLDER)[0]


def weights_files() -> list[str]:
    """Weights files for a combo widget; empty where ComfyUI is absent (schema tests)."""
    try:
        weights_folder()
        import folder_paths
    except ImportError:
        return []
    return folder_paths.get_filename_list(FOLDER)


def check_conditioning_batch(conditioning, frames: int, name: str) -> None:
    """ValueError unless every prompt tensor in `conditioning` has batch 1 or `frames`
    (ComfyUI would silently repeat or cut any other batch to the number of frames)."""
    for tensor, _ in conditioning:
        if tensor.shape[0] not in (1, frames):
            raise ValueError(f"the {name} conditioning has a batch of {tensor.shape[0]} prompts but the "
                             f"latent has {frames} frames: give one prompt for all frames (batch 1) or "
                             f"exactly one per frame (batch {frames}).")


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError other backends (MPS) raise."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def out_of_memory(node: str, what: str, knobs) -> torch.OutOfMemoryError:
    """The error to raise in place of an out-of-memory error: still an OutOfMemoryError,
    so ComfyUI frees its models, with the settings that need less memory."""
    return torch.OutOfMemoryError(f"{node} ran out of memory {what}. To need less: " + "; ".join(knobs) + ".")


def frames_and_size(samples) -> str:
    """'8 frames of 512x512' for a (frames, 4, h, w) latent batch."""
    return f"{samples.shape[0]} frames of {samples.shape[3] * 8}x{samples.shape[2] * 8}"


def show_on_node(node_id, text: str) -> None:
    """Progress text under the node in the page (ComfyUI versions that support it)."""
    if node_id is None:
        return
    try:
        from server import PromptServer
        PromptServer.instance.send_progress_text(text, node_id)
    except (ImportError, AttributeError):
        pass
