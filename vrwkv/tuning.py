"""One-shot tuning on a clip (Tune-A-Video's recipe), independent of ComfyUI.

Each step draws one timestep for the whole clip and one noise tensor, and minimises the
epsilon-prediction MSE; the caller supplies that loss (`step_loss`), which is where the
model is called. AdamW as Tune-A-Video (betas 0.9/0.999, eps 1e-8, weight decay 1e-2,
gradient clipping at 1.0), except for the blocks' temporal parameters (every `mu`, `decay`,
`first`): AdamW moves a parameter by about lr per step whatever its gradient, so at 3e-5 for
300 steps these (initialised at 1.0, meaningful over several units) would move by less than
0.01, i.e. stay frozen at their init; they get `lr * temporal_lr_multiplier` and no weight
decay (`param_groups`). The other block parameters are new layers, not pretrained weights,
and get `lr * block_lr_multiplier` (with weight decay): the lean block's output is two thin
factors, the second zero at init, and at the recipe's rate it barely leaves the identity.
A step is applied only when its loss and gradients are finite,
so the parameters always hold the last good state: a NaN stops the run with the step
named, and an exception from `on_step` (ComfyUI's interrupt) leaves the completed steps.
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .blocks import is_temporal_parameter

# Provisional, to be chosen on the edit-quality benchmark: 3e-5 * 100 = 3e-3 per step lets a
# temporal parameter move by up to ~0.9 over the recipe's 300 steps where its gradient keeps
# one sign (less where it is noisy), i.e. across the range where mu and decay change meaning,
# without leaving it (decay and first stay near their init scale of 1).
TEMPORAL_LR_MULTIPLIER = 100.0
# Adam's eps for the temporal parameters. `first` enters as first / L and weighs one token
# among L, so its gradient is ~1/L^2 of the others' (1e-10 on an 8-frame 8x8 clip, far
# less at 512 px), far below the recipe's eps of 1e-8, which would then cut its steps by
# orders of magnitude; with a smaller eps every temporal parameter takes Adam's usual
# ~lr-sized steps.
TEMPORAL_EPS = 1e-16
# Chosen on the edit-quality benchmark (bench/results/quality_cpu.md), which cannot rank
# quality yet but measures how far tuning moves a model: in 60 steps at 3e-5 Tune-A-Video's
# recipe changes the toy model's denoised clip by 2.1e-2, the default (lean) block by 1.5e-4
# at 1x, 0.5-0.9e-2 at 10x, 2.4-4.6e-2 at 30x (one seed, two clips); at 20x it moves about
# as far as Tune-A-Video's own recipe does.
BLOCK_LR_MULTIPLIER = 20.0


@dataclass(frozen=True)
class TuneSettings:
    steps: int = 300
    lr: float = 3e-5
    seed: int = 0
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    temporal_lr_multiplier: float = TEMPORAL_LR_MULTIPLIER
    block_lr_multiplier: float = BLOCK_LR_MULTIPLIER


class NonFiniteLoss(RuntimeError):
    """Tuning diverged; the parameters hold the state before the failing step."""


def draw_noise(generator: torch.Generator, x0: torch.Tensor, num_timesteps: int = 1000):
    """One training timestep for the clip and a noise tensor like x0, drawn on the CPU from
    `generator` so the run is the same on every device."""
    t = int(torch.randint(0, num_timesteps, (1,), generator=generator))
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    return t, noise


def step_frames(frames: int, window: int) -> int:
    """Frames per tuning step: the window when it is shorter than the clip, else the clip."""
    return window if 0 < window < frames else frames


def draw_window(generator: torch.Generator, frames: int, window: int) -> int:
    """First frame of a random contiguous window of `window` frames (Tune-A-Video samples its
    frames alike), drawn from the tuning generator; 0 without a draw when the window holds
    the clip (window 0 or >= frames), so such runs draw exactly what they did before."""
    if window <= 0 or window >= frames:
        return 0
    return int(torch.randint(0, frames - window + 1, (1,), generator=generator))


def epsilon_loss(denoise: Callable, x0: torch.Tensor, sigma_table: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """One step's loss of the recipe: a timestep and noise for the whole clip, x = x0 + sigma *
    eps (an epsilon model in sigma space), `denoise(x, sigma)` -> x0_hat, MSE of the implied
    eps against the drawn one, in float32."""
    t, eps = draw_noise(generator, x0)
    sigma = sigma_table[t].to(x0.device).expand(x0.shape[0])
    x = x0 + eps * sigma.view(-1, 1, 1, 1)
    eps_pred = (x - denoise(x, sigma).float()) / sigma.view(-1, 1, 1, 1)
    return torch.nn.functional.mse_loss(eps_pred, eps)


def param_groups(named_parameters, settings: TuneSettings, pretrained=()) -> list[dict]:
    """AdamW parameter groups for (name, parameter) pairs of VRWKV blocks: the temporal
    parameters at lr * temporal_lr_multiplier without weight decay (and with TEMPORAL_EPS),
    the rest at lr * block_lr_multiplier; `pretrained` weights tuned beside them (the UNet's
    query projections) in a group of their own at the recipe's lr."""
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
    """Runs `settings.steps` AdamW steps on `params` (parameters, or groups of them as torch
    optimizers take, e.g. from `param_groups`); returns the loss of every step.
    `step_loss(generator)` computes one step's loss; `on_step(step, loss)` is called after
    each applied step (1-based) and may raise to stop the run."""
    groups = list(params)
    groups = groups if groups and isinstance(groups[0], dict) else [{"params": groups}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("nothing to tune: no parameter requires gradients")
    # Bi-WKV does not check its decay and bonus every call (a GPU sync): check them here once;
    # the steps below keep them finite (a step is applied only with finite loss and gradients).
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
