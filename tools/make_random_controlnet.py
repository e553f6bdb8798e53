"""Writes a random-weight ControlNet for the random SD1.5 of the same depth
(make_random_sd15.py), built from ComfyUI's own ControlNet class and saved as ControlNet
checkpoints are (`control_model.` keys), so core ControlNetLoader detects and loads it.

    COMFYUI_PYTHON make_random_controlnet.py --depth shallow|full --out PATH

Its zero convolutions get PyTorch's default initialisation like every other layer (a
trained ControlNet's are far from zero too), so its hint visibly changes the samples;
everything is seeded.
"""

import argparse
import os
import sys

import torch

from make_random_sd15 import DEPTHS, torch_default_init, unet_config


def build(depth: str) -> dict:
    import comfy.cldm.cldm
    import comfy.ops
    config = {k: v for k, v in unet_config(depth).items() if k not in ("out_channels", "transformer_depth_output")}
    model = comfy.cldm.cldm.ControlNet(hint_channels=3, num_head_channels=-1, dtype=torch.float32,
                                       operations=comfy.ops.disable_weight_init, **config)
    torch_default_init(model)
    return {"control_model." + k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}


def main():
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
