"""The UNet patch: VRWKV blocks run at ComfyUI's output-block hook
(`ModelPatcher.set_model_output_block_patch`), written around three ComfyUI behaviours:
- `clone()` deep-copies model options: the patch's `__deepcopy__` returns itself, so every
  clone runs the module that is trained and saved;
- `model_patches_to` passes the load device, then the UNet's dtype: `to()` follows devices
  and keeps the blocks' own (training) dtype;
- with CFG the batch holds len(cond_or_uncond) videos of T frames each.
On a window of a longer clip, transformer_options carries the window (vrwkv/windows.py),
which hands each block its Bi-WKV carry; in an edit it carries ddim.EDIT_KEY.
"""

import copy

import torch
from torch import nn

from .blocks import SpatialMix3D, VRWKVBlock3D
from .config import BlockConfig
from .ddim import EDIT_KEY
from .windows import CONTEXT_KEY

INIT_SEED = 0   # the blocks' initialisation (VRWKVBlocks)


class VRWKVBlocks(nn.Module):
    """The blocks named in a layout.block_spec; `block(channels, gate_channels, BlockConfig)`
    builds one (the benchmarks swap in baseline mixers). spec["norm_frames"], set by the first
    tuning, fixes the frame count the decay is divided by (blocks.SpatialMix3D)."""

    def __init__(self, spec: dict, block=VRWKVBlock3D):
        super().__init__()
        self.spec = spec
        self.config = BlockConfig.from_spec(spec)
        # One initialisation for a layout, whatever the global random state (ComfyUI's samplers
        # reseed it): a workflow tunes the same blocks each time it runs.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            self.blocks = nn.ModuleDict({name: block(b["channels"], b["gate_channels"],
                                                     self.config.at_level(b["level"]))
                                         for name, b in spec["blocks"].items()})
        self.set_norm_frames(spec.get("norm_frames"))

    def set_norm_frames(self, frames: int | None) -> None:
        """Normalise every block's decay by `frames` frames (None: each call's own), recorded in the spec."""
        if frames is not None:
            self.spec["norm_frames"] = int(frames)
        for m in self.modules():
            if isinstance(m, SpatialMix3D):
                m.norm_frames = frames

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for block in self.blocks.values():
            block.gradient_checkpointing = enabled


def frames_per_video(batch: int, transformer_options: dict) -> int:
    videos = len(transformer_options.get("cond_or_uncond") or [None])
    if batch % videos:
        raise ValueError(f"VRWKV: the UNet batch of {batch} does not split into {videos} videos "
                         f"(cond_or_uncond = {transformer_options.get('cond_or_uncond')}); every prompt "
                         "must cover the same number of frames")
    return batch // videos


class ModulePatch:
    """A patch object holding trainable modules (`self.module`) that keeps their identity
    across `ModelPatcher.clone()` and moves them between devices in their own dtype."""

    module: nn.Module

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        if not isinstance(device_or_dtype, torch.dtype):
            device = torch.device(device_or_dtype)
            if next(self.module.parameters()).device != device:
                self.module.to(device)
        return self


class VRWKVPatch(ModulePatch):
    """output_block_patch(h, hsp, transformer_options) -> (h, hsp)."""

    def __init__(self, blocks: VRWKVBlocks, info: dict | None = None, base_deltas: dict | None = None,
                 base: dict | None = None):
        self.blocks = blocks
        self.info = dict(info or {})                  # training record saved with the weights
        self.base_deltas = dict(base_deltas or {})    # tuned UNet weights - original, by model key
        self.base = base                              # the model patched: weights.unet_fingerprint, checkpoint
        self.end_sigmas = (None, None)                # sampling below these noise levels skips the blocks: plain, edits
        self._ended = (None, False, False)            # (sigmas of the last model call, edit, its verdict)

    def __call__(self, h: torch.Tensor, hsp: torch.Tensor, transformer_options: dict):
        self.to(h.device)          # no-op once loaded; covers offload modes that skip model_patches_to
        index = transformer_options["block"][1]
        frames = frames_per_video(h.shape[0], transformer_options)
        blocks = self.blocks.blocks
        if self.ended(transformer_options):
            return h, hsp
        window = transformer_options.get(CONTEXT_KEY)
        edit = bool(transformer_options.get(EDIT_KEY))

        def run(name, x, gate=None):
            carry = window.carry(name) if window is not None else None
            return blocks[name](x, frames, gate=gate, carry=carry, edit=edit)

        if index == 0 and "mid" in blocks:            # h is the mid-block output here
            h = run("mid", h)
        if f"skip_{index}" in blocks:
            hsp = run(f"skip_{index}", hsp, gate=h)
        return h, hsp

    def set_ends(self, percent_to_sigma) -> None:
        """end_sigmas from the blocks' end_percent and edit_end_percent, through the model's
        percent_to_sigma (ComfyUI's, or ddim.percent_to_sigma on a sigma table)."""
        config = self.blocks.config
        self.end_sigmas = tuple(None if config.end(edit) >= 1 else percent_to_sigma(config.end(edit))
                                for edit in (False, True))

    def ended(self, transformer_options: dict) -> bool:
        """Whether this sampling call is past the blocks' part (BlockConfig.end_percent, or
        edit_end_percent in an edit): its noise level below end_sigmas'. Tuning (under autograd)
        always runs them. One read-back per model call: the verdict is kept for its other blocks."""
        sigmas, edit = transformer_options.get("sigmas"), bool(transformer_options.get(EDIT_KEY))
        end = self.end_sigmas[edit]
        if end is None or sigmas is None or torch.is_grad_enabled():
            return False
        if self._ended[0] is not sigmas or self._ended[1] != edit:
            self._ended = (sigmas, edit, bool(sigmas.max() < end))
        return self._ended[2]

    @property
    def module(self) -> nn.Module:
        return self.blocks

    def copy(self) -> "VRWKVPatch":
        """An independent patch with its own copy of the blocks (for tuning a clone)."""
        patch = VRWKVPatch(copy.deepcopy(self.blocks), self.info, self.base_deltas, self.base)
        patch.end_sigmas = self.end_sigmas
        return patch


# Where ComfyUI keeps the patch: transformer_options["patches"]["output_block_patch"], a list.
def find_patch(transformer_options: dict) -> VRWKVPatch | None:
    """The VRWKV patch among transformer options' output-block patches, if any."""
    found = [p for p in transformer_options.get("patches", {}).get("output_block_patch", [])
             if isinstance(p, VRWKVPatch)]
    return found[-1] if found else None


def replace_patch(transformer_options: dict, old: VRWKVPatch, new: VRWKVPatch) -> None:
    """Puts `new` where `old` is registered (in place)."""
    patches = transformer_options["patches"]["output_block_patch"]
    patches[patches.index(old)] = new


def with_patch(transformer_options: dict, patch: VRWKVPatch) -> dict:
    """A copy of transformer options with `patch` registered after any output-block patches
    there (for UNets called without a ModelPatcher, as ModelPatcher.set_model_output_block_patch does)."""
    patches = dict(transformer_options.get("patches", {}))
    patches["output_block_patch"] = list(patches.get("output_block_patch", [])) + [patch]
    return {**transformer_options, "patches": patches}
