"""Writes a random-weight checkpoint with SD1.5's layout, built from ComfyUI's own classes,
which ComfyUI detects as SD1.5 (its model detection goes by tensor shapes).

    COMFYUI_PYTHON make_random_sd15.py --depth shallow|full --out PATH

"full" has the real UNet topology (12 output blocks); "shallow" keeps SD1.5's widths but
two levels with one res block each (4 input and 4 output blocks), still detected as
SD1.5 and several times faster. VAE and text encoder are always full size. Weights get
PyTorch's default initialisation (ComfyUI's ops classes skip it), so activations stay
finite; everything is seeded.
"""

import argparse
import os
import sys

import torch

DEPTHS = {
    "full": {"num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]},
    "shallow": {"num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1, 1, 1],
                "transformer_depth_output": [1, 1, 1, 1]},
}
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def torch_default_init(model: torch.nn.Module) -> None:
    """Runs torch.nn's own reset_parameters on every layer (ComfyUI's ops override it)."""
    for m in model.modules():
        for cls in type(m).__mro__:
            if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(m)
                break


def unet_config(depth: str) -> dict:
    """SD1.5's UNet configuration (as ComfyUI detects it) at that depth."""
    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
            "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
            "num_heads": 8, "use_temporal_attention": False, "use_temporal_resblock": False, **DEPTHS[depth]}


def build(depth: str) -> dict:
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models
    parts = {
        "model.diffusion_model.": comfy.supported_models.SD15(unet_config(depth)).get_model({}).diffusion_model,
        "first_stage_model.": comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4),
        "cond_stage_model.": comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32),
    }
    sd = {}
    for prefix, module in parts.items():
        torch_default_init(module)
        for k, v in module.state_dict().items():
            sd[prefix + k] = v.to(torch.float16).contiguous()
    return sd


def main(build=build):
    """Writes build(--depth) to --out atomically, seeded, under ComfyUI's CPU settings
    (make_random_controlnet.py passes its own build)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", choices=sorted(DEPTHS), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    from safetensors.torch import save_file
    torch.manual_seed(0)
    tmp = args.out + ".tmp"
    save_file(build(args.depth), tmp)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
