"""One-shot tuning on a clip (Tune-A-Video's recipe), independent of ComfyUI.

Each step draws one timestep for the whole clip and one noise tensor, and minimises the
epsilon-prediction MSE; the caller supplies that loss (`step_loss`), which is where the
model is called. AdamW as Tune-A-Video (betas 0.9/0.999, eps 1e-8, weight decay 1e-2,
gradient clipping at 1.0). A step is applied only when its loss and gradients are finite,
so the parameters always hold the last good state: a NaN stops the run with the step
named, and an exception from `on_step` (ComfyUI's interrupt) leaves the completed steps.
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class TuneSettings:
    steps: int = 300
    lr: float = 3e-5
    seed: int = 0
    weight_decay: float = 1e-2
    grad_clip: float = 1.0


class NonFiniteLoss(RuntimeError):
    """Tuning diverged; the parameters hold the state before the failing step."""


def draw_noise(generator: torch.Generator, x0: torch.Tensor, num_timesteps: int = 1000):
    """One training timestep for the clip and a noise tensor like x0, drawn on the CPU from
    `generator` so the run is the same on every device."""
    t = int(torch.randint(0, num_timesteps, (1,), generator=generator))
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    return t, noise


def tune(params, step_loss: Callable[[torch.Generator], torch.Tensor], settings: TuneSettings,
         on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Runs `settings.steps` AdamW steps on `params`; returns the loss of every step.
    `step_loss(generator)` computes one step's loss; `on_step(step, loss)` is called after
    each applied step (1-based) and may raise to stop the run."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to tune: no parameter requires gradients")
    # Bi-WKV does not check its decay and bonus every call (a GPU sync): check them here once;
    # the steps below keep them finite (a step is applied only with finite loss and gradients).
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise NonFiniteLoss("tuning starts from non-finite weights (a diverged run or a broken file); "
                            "reload the model and the VRWKV weights")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8,
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
