"""One toy clip through the pack's own pipeline: patch -> tune -> DDIM invert -> DDIM sample
with the edit prompt (the edit track), or sample from fresh noise (the generation track).

The methods are the pack's (vrwkv/) and Tune-A-Video (baselines/tune_a_video.py); around them
this module puts what ComfyUI would: the sigma-space model call with transformer options
(model.denoise, also inside the tune node's loss) and CFG (model.Guided). `Method` names the
methods and ablations the demo and the quality benchmark compare.
"""

import copy
import time
from dataclasses import dataclass

import torch

from tools.load_pack import load_pack

from .model import Guided, ToyModel

load_pack()
from vrwkv_editor.vrwkv.blocks import SpatialMix3D  # noqa: E402
from vrwkv_editor.vrwkv.config import DEFAULT, BlockConfig  # noqa: E402
from vrwkv_editor.vrwkv.ddim import ddim_sigmas, percent_to_sigma, sample_ddim  # noqa: E402
from vrwkv_editor.vrwkv.frame_attention import (  # noqa: E402
    SparseCausalAttention,
    transformer_blocks,
    with_attn1,
)
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout  # noqa: E402
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch, with_patch  # noqa: E402
from vrwkv_editor.vrwkv.tuning import TuneSettings, epsilon_loss, param_groups, tune  # noqa: E402

MU_NAMES = ("mu", "mu_k", "mu_r")   # the temporal interpolation (token shift) weights of a block
# How a block's decay and bonus are scaled per token (the decay-scaling ablation). "length":
# divided by the clip's length in tokens, as shipped (Vision-RWKV): at init a token's weight
# falls by e^-1 across the whole clip. "frame": divided by one frame's tokens: e^-1 per frame,
# so a token reads mostly its own and the neighbouring frames. "none": per token, unscaled:
# e^-1 per token, so a token reads a few neighbours in its own row.
DECAY_SCALINGS = ("length", "frame", "none")


@dataclass(frozen=True)
class Method:
    """How a clip is edited. kind: "plain" (no temporal layers, no tuning), "vrwkv" (the
    pack's blocks, built from `config` as VRWKV Patch Model builds them; None: its default) or "tav"
    (Tune-A-Video). freeze_mu keeps every mu at its initial 1 (no temporal interpolation);
    decay_scaling is one of DECAY_SCALINGS; block_lr_multiplier and temporal_lr_multiplier
    replace the tuning's (vrwkv/tuning.py) where given."""
    name: str
    kind: str
    lr: float = 3e-5
    config: BlockConfig | None = None
    freeze_mu: bool = False
    decay_scaling: str = "length"
    block_lr_multiplier: float | None = None
    temporal_lr_multiplier: float | None = None


@dataclass(frozen=True)
class Settings:
    tune_steps: int = 40
    ddim_steps: int = 25
    cfg: float = 4.0
    seed: int = 33


def prepare(base: ToyModel, method: Method):
    """(model, transformer_options, trainable parameters): a copy of the base model with the
    method's patches; the base model is never changed. VRWKV's come as (name, parameter)
    pairs, so tuning gives its temporal parameters their own group as the tune node does."""
    model = copy.deepcopy(base).requires_grad_(False)
    if method.kind == "plain":
        return model, {}, []
    if method.kind == "vrwkv":
        config = method.config or DEFAULT
        blocks = VRWKVBlocks(block_spec(unet_layout(model.unet), config))
        scale_decay(blocks, method.decay_scaling)
        for name, p in blocks.named_parameters():
            p.requires_grad_(not (method.freeze_mu and name.rsplit(".", 1)[-1] in MU_NAMES))
        patch = VRWKVPatch(blocks)
        patch.set_ends(lambda percent: percent_to_sigma(model.sigmas, percent))
        options = with_patch({}, patch)
        if config.frame_attention == "first+previous":
            options = with_attn1(options, transformer_blocks(model.unet), SparseCausalAttention())
        return model, options, [(n, p) for n, p in blocks.named_parameters() if p.requires_grad]
    if method.kind == "tav":
        from baselines.tune_a_video import tune_a_video
        tav, params = tune_a_video(model.unet)
        return model, tav.transformer_options({}), params
    raise ValueError(f"unknown method kind {method.kind!r}; use plain, vrwkv or tav")


def scale_decay(blocks, scaling: str) -> None:
    """Replace every spatial mix's per-token decay and bonus by the `scaling` ablation (the
    pack's blocks stay as they are: the override lives on these block instances only)."""
    if scaling not in DECAY_SCALINGS:
        raise ValueError(f"unknown decay scaling {scaling!r}; choose one of {DECAY_SCALINGS}")
    if scaling == "length":
        return
    for mix in blocks.modules():
        if isinstance(mix, SpatialMix3D):
            if scaling == "frame":   # a pre-hook reads one frame's token count off the input
                mix.register_forward_pre_hook(lambda module, args: setattr(module, "frame_tokens",
                                                                           args[0].shape[2] * args[0].shape[3]))
                mix.decay_and_bonus = lambda tokens, m=mix: (m.decay / m.frame_tokens, m.first / m.frame_tokens)
            else:
                mix.decay_and_bonus = lambda tokens, m=mix: (m.decay, m.first)


def tune_on_clip(model: ToyModel, options: dict, params: list, clip: torch.Tensor, prompt: str,
                 steps: int, lr: float, seed: int, block_lr_multiplier: float | None = None,
                 temporal_lr_multiplier: float | None = None) -> list:
    """The pack's tuning loop on the clip with its source prompt; returns the losses."""
    cond = model.text([prompt]).detach().expand(clip.shape[0], -1, -1)
    call_options = {**options, "cond_or_uncond": [0]}

    def step_loss(generator):
        return epsilon_loss(lambda x, sigma: model.denoise(x, sigma, cond, call_options), clip, model.sigmas,
                            generator)

    multipliers = {"block_lr_multiplier": block_lr_multiplier, "temporal_lr_multiplier": temporal_lr_multiplier}
    settings = TuneSettings(steps=steps, lr=lr, seed=seed, **{k: v for k, v in multipliers.items() if v is not None})
    if params and isinstance(params[0], tuple):     # named VRWKV parameters: the node's groups
        params = param_groups(params, settings)
    with torch.enable_grad():
        return tune(params, step_loss, settings)


@torch.no_grad()
def invert(model, options, clip, prompt, steps):
    """DDIM inversion with the source prompt at cfg 1 (VRWKV DDIM Inversion's defaults, refine 0)."""
    guided = Guided(model, model.text([prompt]), model.text([""]), 1.0, options)
    return sample_ddim(guided, clip, ddim_sigmas(model.sigmas, steps).flip(0))


@torch.no_grad()
def sample(model, options, start, prompt, steps, cfg):
    """DDIM sampling from an inverted clip (VRWKV KSampler with inverted_latent, eta 0): an edit."""
    guided = Guided(model, model.text([prompt]), model.text([""]), cfg, options)
    return sample_ddim(guided, start, ddim_sigmas(model.sigmas, steps), edit=True)


@torch.no_grad()
def output_change(base: ToyModel, model: ToyModel, options: dict, clip: torch.Tensor, prompt: str,
                  seed: int, step: int = 500) -> float:
    """How far a method's patched, tuned model has moved from the plain one: the relative
    change of the denoised clip at one noise level (training step `step`), same noise."""
    sigma = base.sigmas[step].expand(clip.shape[0])
    noise = torch.randn(clip.shape, generator=torch.Generator().manual_seed(seed))
    noisy, cond = clip + sigma[:, None, None, None] * noise, base.text([prompt]).expand(clip.shape[0], -1, -1)
    plain = base.denoise(noisy, sigma, cond, {"cond_or_uncond": [0]})
    patched = model.denoise(noisy, sigma, cond, {**options, "cond_or_uncond": [0]})
    return float((patched - plain).norm() / plain.norm())


@dataclass
class Tuned:
    """A method's patched model after tuning on a clip: what both tracks sample from."""
    model: ToyModel
    options: dict
    losses: list
    tune_s: float
    moved: float


def tune_method(base: ToyModel, method: Method, clip: torch.Tensor, source_prompt: str, settings: Settings) -> Tuned:
    """Patch a copy of `base` with the method and tune it on the clip with its source prompt."""
    model, options, params = prepare(base, method)
    start = time.perf_counter()
    losses = []
    if method.kind != "plain" and settings.tune_steps:
        losses = tune_on_clip(model, options, params, clip, source_prompt, settings.tune_steps, method.lr,
                              settings.seed, method.block_lr_multiplier, method.temporal_lr_multiplier)
    tune_s = time.perf_counter() - start
    return Tuned(model, options, losses, tune_s, output_change(base, model, options, clip, source_prompt, settings.seed))


def edit_tuned(tuned: Tuned, clip: torch.Tensor, source_prompt: str, edit_prompts: list, settings: Settings) -> dict:
    """The edit track: DDIM-invert the clip with the source prompt, sample each edit prompt from
    the inverted noise, and reconstruct (source prompt, cfg 1). {"edits": {prompt: frames},
    "reconstruction": frames}."""
    inverted = invert(tuned.model, tuned.options, clip, source_prompt, settings.ddim_steps)
    return {
        "edits": {p: sample(tuned.model, tuned.options, inverted, p, settings.ddim_steps, settings.cfg)
                  for p in edit_prompts},
        "reconstruction": sample(tuned.model, tuned.options, inverted, source_prompt, settings.ddim_steps, 1.0),
    }


NOISES = ("independent", "shared")


def fresh_noise(shape: tuple, seed: int, noise: str) -> torch.Tensor:
    """Standard normal starting noise for a clip (T, C, H, W): independent per frame, or one
    draw shared by every frame (then only the temporal layers can make the frames differ)."""
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")
    generator = torch.Generator().manual_seed(seed)
    if noise == "shared":
        return torch.randn((1, *shape[1:]), generator=generator).expand(shape).contiguous()
    return torch.randn(shape, generator=generator)


@torch.no_grad()
def generate(tuned: Tuned, prompt: str, shape: tuple, settings: Settings, seed: int, noise: str = "independent"):
    """The generation track (Tune-A-Video's one-shot task): DDIM-sample `prompt` from fresh
    noise, no inversion, with the tuned model (cfg settings.cfg, eta 0)."""
    sigmas = ddim_sigmas(tuned.model.sigmas, settings.ddim_steps)
    start = fresh_noise(shape, seed, noise) * sigmas[0]
    guided = Guided(tuned.model, tuned.model.text([prompt]), tuned.model.text([""]), settings.cfg, tuned.options)
    return sample_ddim(guided, start, sigmas)


def edit(base: ToyModel, method: Method, clip: torch.Tensor, source_prompt: str, edit_prompts: list,
         settings: Settings) -> dict:
    """Patch, tune, invert, sample each edit prompt, and reconstruct (source prompt, cfg 1).
    Returns {"edits": {prompt: frames}, "reconstruction": frames, "losses", "tune_s", "moved"}
    (moved: output_change after tuning)."""
    tuned = tune_method(base, method, clip, source_prompt, settings)
    return {**edit_tuned(tuned, clip, source_prompt, edit_prompts, settings),
            "losses": tuned.losses, "tune_s": tuned.tune_s, "moved": tuned.moved}
