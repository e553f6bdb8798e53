"""Cross-frame self-attention: frame i's attn1 reads the keys and values of the clip's first
frame and of frame i-1 (Tune-A-Video's sparse-causal attention; the VRWKV-Editor authors' code
keeps it beside its Bi-WKV mixers). Every frame draws its appearance from the same first frame,
which is what keeps an edit's detail from being redrawn frame by frame. No parameters: an attn1
replacement per transformer block, keyed as ComfyUI's patches_replace keys. Frame 0 reads its
own tokens twice, which is plain self-attention. In the windows of a long clip (vrwkv/windows.py)
every window reads the clip's first frame, kept by the first window, and its first frame reads
the frame before the window, kept by the window before: windows attend as the whole clip does.
"""

import re

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .patch import frames_per_video
from .windows import CONTEXT_KEY

# input_blocks.<id>.<layer>..., middle_block.<layer>..., output_blocks.<id>.<layer>...
BLOCK_NAME = re.compile(r"(?:(input|output)_blocks\.(\d+)|middle_block)\.\d+\.transformer_blocks\.(\d+)")


def sdpa(q, k, v, heads):
    """ComfyUI's attention signature: (batch, tokens, heads * dim) in and out."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")


def first_and_previous(t: torch.Tensor, frames: int, first: torch.Tensor | None = None,
                       before: torch.Tensor | None = None) -> torch.Tensor:
    """Keys or values (videos * frames, tokens, C) -> (videos * frames, 2 * tokens, C): for
    frame i the tokens of frame 0, then those of frame i-1 (frame 0: its own). A window of a
    longer clip passes the clip's first frame (`first`) and the frame before the window
    (`before`), (videos, 1, tokens, C) each."""
    grid = rearrange(t, "(v f) n c -> v f n c", f=frames)
    first = grid[:, :1] if first is None else first.to(t.device, t.dtype)
    before = grid[:, :1] if before is None else before.to(t.device, t.dtype)
    previous = torch.cat([before, grid[:, :-1]], dim=1)
    both = torch.cat([first.expand_as(grid), previous], dim=2)
    return rearrange(both, "v f n c -> (v f) n c")


class SparseCausalAttention:
    """attn1 replacement: (q, k, v, extra_options) -> attention output, q/k/v already
    projected by the block's own to_q / to_k / to_v."""

    def __init__(self, attention=sdpa):
        self.attention = attention

    def __call__(self, q, k, v, extra_options):
        frames = frames_per_video(q.shape[0], extra_options)
        first = before = (None, None)
        window = extra_options.get(CONTEXT_KEY)
        if window is not None:
            first, before = window.frame_anchors((*extra_options["block"], extra_options["block_index"]), k, v, frames)
        precision = extra_options.get("attn_precision")     # passed on only when set: plain attentions lack it
        return self.attention(q, first_and_previous(k, frames, first[0], before[0]),
                              first_and_previous(v, frames, first[1], before[1]), extra_options["n_heads"],
                              **({} if precision is None else {"attn_precision": precision}))


def transformer_blocks(unet: nn.Module) -> dict:
    """{(block name, block id, transformer index): BasicTransformerBlock} of an SD1.5-style
    UNet, keyed as ComfyUI's patches_replace keys."""
    found = {}
    for name, module in unet.named_modules():
        m = BLOCK_NAME.fullmatch(name)
        if m:
            found[(m[1] or "middle", int(m[2] or 0), int(m[3]))] = module
    if not found:
        raise ValueError(f"{type(unet).__name__} has no transformer blocks under input_blocks / middle_block / "
                         "output_blocks: cross-frame attention patches SD1.5-style UNets only")
    return found


def with_attn1(transformer_options: dict, keys, replacement) -> dict:
    """A copy of transformer options with `replacement` as attn1 of every block in `keys` (for
    UNets called without a ModelPatcher, as ModelPatcher.set_model_attn1_replace does)."""
    replace = {name: dict(table) for name, table in transformer_options.get("patches_replace", {}).items()}
    replace.setdefault("attn1", {}).update({k: replacement for k in keys})
    return {**transformer_options, "patches_replace": replace}
