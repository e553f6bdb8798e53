"""Writes a random-weight SD1.5 ControlNet (ComfyUI's own cldm.ControlNet on the UNet config
of make_random_sd15.py's checkpoint of the same depth, with an RGB hint), saved under the
`control_model.` prefix of the original ControlNet files, which ComfyUI's ControlNet Loader
detects as an SD1.5 ControlNet.

    COMFYUI_PYTHON make_random_controlnet.py --depth shallow|full --out PATH

Weights get PyTorch's default initialisation, the zero convolutions included (a trained
ControlNet's are far from zero too), so the hint changes the UNet's output; seeded.
"""

import argparse
import os
import sys

import torch

from make_random_sd15 import DEPTHS, torch_default_init, unet_config


def build(depth: str) -> dict:
    import comfy.cldm.cldm
    config = {k: v for k, v in unet_config(depth).items() if k != "out_channels"}
    control = comfy.cldm.cldm.ControlNet(hint_channels=3, **config)
    torch_default_init(control)
    return {"control_model." + k: v.to(torch.float16).contiguous() for k, v in control.state_dict().items()}


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
