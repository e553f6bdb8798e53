"""One-shot tuning on a clip (Tune-A-Video's recipe), independent of ComfyUI.

Each step draws one timestep and noise for the whole clip and minimises the caller's
`step_loss` with Tune-A-Video's AdamW, except that the blocks' temporal parameters and new
layers get learning-rate multipliers (`param_groups`): AdamW moves a parameter by about lr
per step, too little at the recipe's lr for them to leave their init. A step is applied only
when its loss and gradients are finite, so the parameters hold the last good state.
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .blocks import is_temporal_parameter

# Temporal parameters (mu, decay, first) at 100x the node's lr, without weight decay: at
# Tune-A-Video's 3e-5 they would barely leave their init in 300 steps.
TEMPORAL_LR_MULTIPLIER = 100.0
# Adam's eps for the temporal parameters: `first` (u = first / L) gets ~1/L^2 of the others'
# gradient, far below the recipe's eps of 1e-8, which would shrink its steps by orders of magnitude.
TEMPORAL_EPS = 1e-16
# The blocks are new layers: at 1x the lr they barely move the toy model's output, at 20x
# about as much as Tune-A-Video's recipe moves it (CONTRIBUTING.md, design notes).
BLOCK_LR_MULTIPLIER = 20.0


@dataclass(frozen=True)
class TuneSettings:
    """VRWKV Tune On Video's defaults. lr is 10x Tune-A-Video's 3e-5: at 3e-5 the blocks do not
    learn the clip's motion in 300 steps (bench/results/quality_cpu.md). 500 steps, as Tune-A-Video's
    recipe: at 300 the blocks learn a 16-frame clip's motion no better than per-frame sampling
    draws it (quality_16_seeds4_cpu.md against quality_16_500steps_cpu.md)."""
    steps: int = 500
    lr: float = 3e-4
    seed: int = 0
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    temporal_lr_multiplier: float = TEMPORAL_LR_MULTIPLIER
    block_lr_multiplier: float = BLOCK_LR_MULTIPLIER


class NonFiniteLoss(RuntimeError):
    """Tuning diverged; the parameters hold the state before the failing step."""


def draw_noise(generator: torch.Generator, x0: torch.Tensor, num_timesteps: int = 1000):
    """One timestep and a noise tensor like x0, drawn on the CPU so every device draws alike."""
    t = int(torch.randint(0, num_timesteps, (1,), generator=generator))
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    return t, noise


def step_frames(frames: int, window: int) -> int:
    """Frames per tuning step: the window when it is shorter than the clip, else the clip."""
    return window if 0 < window < frames else frames


def draw_window(generator: torch.Generator, frames: int, window: int) -> int:
    """First frame of a random `window`-frame window (as Tune-A-Video samples frames); 0 with
    no draw when the window holds the clip, so whole-clip runs draw as they always did."""
    if window <= 0 or window >= frames:
        return 0
    return int(torch.randint(0, frames - window + 1, (1,), generator=generator))


def epsilon_loss(denoise: Callable, x0: torch.Tensor, sigma_table: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """One step's loss: x = x0 + sigma * eps for a drawn timestep and noise, `denoise(x, sigma)`
    -> x0_hat, and the float32 MSE of the implied eps against the drawn one."""
    t, eps = draw_noise(generator, x0)
    sigma = sigma_table[t].to(x0.device).expand(x0.shape[0])
    x = x0 + eps * sigma.view(-1, 1, 1, 1)
    eps_pred = (x - denoise(x, sigma).float()) / sigma.view(-1, 1, 1, 1)
    return torch.nn.functional.mse_loss(eps_pred, eps)


def param_groups(named_parameters, settings: TuneSettings, pretrained=()) -> list[dict]:
    """AdamW groups for the (name, parameter) pairs of VRWKV blocks: temporal parameters at
    lr * temporal_lr_multiplier with TEMPORAL_EPS and no weight decay, the rest at
    lr * block_lr_multiplier; `pretrained` weights (the UNet's query projections) at lr."""
    temporal, rest = [], []
    for name, p in named_parameters:
        (temporal if is_temporal_parameter(name) else rest).append(p)
    groups = [{"params": rest, "lr": settings.lr * settings.block_lr_multiplier},
              {"params": temporal, "lr": settings.lr * settings.temporal_lr_multiplier, "weight_decay": 0.0,
               "eps": TEMPORAL_EPS}]
    pretrained = list(pretrained)
    return groups + [{"params": pretrained}] if pretrained else groups


def tune(params, step_loss: Callable[[torch.Generator], torch.Tensor], settings: TuneSettings,
         on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Runs `settings.steps` AdamW steps on `params` (parameters or groups, e.g. from
    `param_groups`); returns every step's loss. `on_step(step, loss)` runs after each applied
    step (1-based) and may raise to stop the run (the completed steps are kept)."""
    groups = list(params)
    groups = groups if groups and isinstance(groups[0], dict) else [{"params": groups}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("nothing to tune: no parameter requires gradients")
    # Bi-WKV does not check w and u (a GPU sync per call): check once here; steps keep them finite.
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise NonFiniteLoss("tuning starts from non-finite weights (a diverged run or a broken file); "
                            "reload the model and the VRWKV weights")
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    for step in range(1, settings.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"tuning loss became {value} at step {step}; the weights of step {step - 1} "
                                "are kept. Lower the learning rate or use a float32 training dtype.")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLoss(f"gradients became non-finite at step {step}; the weights of step {step - 1} "
                                "are kept. Lower the learning rate or use a float32 training dtype.")
        optimizer.step()
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses
