"""The toy text-to-image model and what ComfyUI would wrap around it.

`ToyModel` holds the UNet, the text encoder and SD1.5's noise schedule. `denoise` is ComfyUI's
discrete epsilon model in sigma space: the UNet sees x / sqrt(1 + sigma^2) at the timestep
nearest sigma, and x0 = x - sigma * eps. `Guided` adds classifier-free guidance batched as
ComfyUI batches it (cond and uncond videos in one UNet call, cond_or_uncond = [0, 1]), so the
pack's patches see what they see inside ComfyUI.
"""

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .text import TextEncoder
from .unet import ToyUNet
from .worlds import get_world

WEIGHTS = get_world("flat").weights


def sd15_alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


class ToyModel(nn.Module):
    """A world's model: the text encoder knows that world's caption vocabulary."""

    def __init__(self, unet_config: dict | None = None, text_width: int = 64, world: str = "flat"):
        super().__init__()
        self.world = get_world(world).name
        self.unet = ToyUNet(**(unet_config or {}))
        self.text = TextEncoder(text_width, get_world(world).vocab, get_world(world).tokens)
        a = sd15_alphas_cumprod()
        self.register_buffer("alphas_cumprod", a.float(), persistent=False)
        self.register_buffer("sigmas", ((1 - a) / a).sqrt().float(), persistent=False)

    def config(self) -> dict:
        return {"unet": self.unet.config, "text_width": self.text.width, "world": self.world}

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest training timestep to each sigma (in log sigma), as ComfyUI's discrete sampling."""
        return (sigma.log()[None] - self.sigmas.log()[:, None]).abs().argmin(dim=0)

    def denoise(self, x, sigma, context, transformer_options=None):
        """x0_hat of x at noise level sigma (per sample) given a text context."""
        sigma = sigma.to(x.dtype)
        scale = (1 + sigma ** 2).rsqrt()[:, None, None, None]
        options = {**(transformer_options or {}), "sigmas": sigma}     # as ComfyUI's model call passes them
        eps = self.unet(x * scale, self.timestep(sigma), context, options)
        return x - sigma[:, None, None, None] * eps


class Guided:
    """model(x, sigma) -> x0_hat with classifier-free guidance, for vrwkv.ddim.sample_ddim.

    cond, uncond: (1, tokens, width) contexts repeated over the batch (the frames of one
    video). cfg 1 runs the cond pass alone, as ComfyUI does."""

    def __init__(self, model: ToyModel, cond, uncond, cfg: float, transformer_options=None):
        self.model, self.cond, self.uncond, self.cfg = model, cond, uncond, cfg
        self.transformer_options = dict(transformer_options or {})

    def __call__(self, x, sigma, model_options=None):
        """`model_options`: as ComfyUI's, its transformer options added to this guide's."""
        b = x.shape[0]
        transformer_options = {**self.transformer_options, **(model_options or {}).get("transformer_options", {})}
        if self.cfg == 1.0:
            options = {**transformer_options, "cond_or_uncond": [0]}
            return self.model.denoise(x, sigma, self.cond.expand(b, -1, -1), options)
        options = {**transformer_options, "cond_or_uncond": [0, 1]}
        context = torch.cat([self.cond.expand(b, -1, -1), self.uncond.expand(b, -1, -1)])
        both = self.model.denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), context, options)
        cond, uncond = both.chunk(2)
        return uncond + (cond - uncond) * self.cfg


def save_model(model: ToyModel, path, metadata: dict, dtype=torch.float16, replace: bool = False) -> Path:
    """Writes the model atomically; returns the path written. An existing file is kept (the
    first free numbered name is written instead) unless `replace` (a training run's own output)."""
    from tools.load_pack import load_pack
    load_pack()
    from vrwkv_editor.vrwkv.files import save_safetensors_atomic
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta["config"] = json.dumps(model.config())
    if not replace:
        return save_safetensors_atomic(tensors, path, meta)
    path = Path(path)
    os.replace(save_safetensors_atomic(tensors, path.with_name(f".{path.name}.new"), meta), path)
    return path


def load_model(path=WEIGHTS) -> tuple:
    """(ToyModel in float32, eval mode, metadata dict). Files without a world in their config
    are the flat world's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"toy model weights not found at {path}: train them with "
                                f"`python -m toyworld.train --world <world> --out {path}`")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: not a toy-world model file")
    config = json.loads(meta["config"])
    model = ToyModel(config["unet"], config["text_width"], config.get("world", "flat"))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), meta
