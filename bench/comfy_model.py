"""A random-weight SD1.5 UNet inside a real ComfyUI ModelPatcher, for benchmarks that need
the real UNet (ComfyUI from COMFYUI_PATH; run with a Python that has its requirements).

Weights are random (timings do not depend on them) but sane: norms at 1, biases at 0,
matrices ~N(0, 0.02), so activations stay finite and no denormals slow the CPU down.
"""

import os
import sys

import torch

FULL = {"num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}
SHALLOW = {"num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1, 1, 1],
           "transformer_depth_output": [1, 1, 1, 1]}


def import_comfy():
    """Puts COMFYUI_PATH on sys.path and selects the CPU unless a GPU is there."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout (and run with the Python that runs it)")
    sys.path.insert(0, path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = not torch.cuda.is_available()


def random_sd15(depth: str = "full", dtype=torch.float32, seed: int = 0):
    """A ModelPatcher holding a random SD1.5 BaseModel (ComfyUI's SD15 config)."""
    import_comfy()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
              "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
              "use_temporal_attention": False, "use_temporal_resblock": False, **(FULL if depth == "full" else SHALLOW)}
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "", device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    # Frozen, as a checkpoint's UNet is when tuned (ComfyUI loads it under inference mode and
    # VRWKV Tune On Video replaces those tensors by frozen ones): otherwise every backward
    # would also compute gradients for all UNet weights it reaches (3.4 GB for full SD1.5).
    model.requires_grad_(False)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def load_pack_in_comfy():
    """The pack as ComfyUI imports it (by folder path, relative imports inside)."""
    from . import load_pack
    return load_pack()
