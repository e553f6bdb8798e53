"""Writes a random-weight ControlNet for the random SD1.5 of the same depth
(make_random_sd15.py), built from ComfyUI's own ControlNet class and saved as ControlNet
checkpoints are (`control_model.` keys), so core ControlNetLoader detects and loads it.

    COMFYUI_PYTHON make_random_controlnet.py --depth shallow|full --out PATH

Its zero convolutions get PyTorch's default initialisation like every other layer (a
trained ControlNet's are far from zero too), so its hint visibly changes the samples;
everything is seeded.
"""

import torch

import make_random_sd15
from make_random_sd15 import torch_default_init, unet_config


def build(depth: str) -> dict:
    import comfy.cldm.cldm
    import comfy.ops
    config = {k: v for k, v in unet_config(depth).items() if k not in ("out_channels", "transformer_depth_output")}
    model = comfy.cldm.cldm.ControlNet(hint_channels=3, num_head_channels=-1, dtype=torch.float32,
                                       operations=comfy.ops.disable_weight_init, **config)
    torch_default_init(model)
    return {"control_model." + k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    make_random_sd15.main(build)
