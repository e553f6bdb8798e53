"""Baseline token mixers the benchmarks compare Bi-WKV with."""

import torch
from einops import rearrange
from torch import nn

from . import load_pack

load_pack()
from vrwkv_editor.vrwkv.blocks import ChannelMix3D  # noqa: E402

HEAD_DIM = 40   # SD1.5 attention head width at 320 channels


class TemporalAttentionBlock(nn.Module):
    """Tune-A-Video's temporal attention (`attn_temp`): full self-attention across the frames
    at each spatial position, zero-initialised output, residual; followed by the same
    channel mix as the VRWKV block, so the two blocks differ only in their token mixer.
    Same call as VRWKVBlock3D: (x, frames, gate) with the gate unused."""

    joint = False   # True: one attention over all T*H*W tokens of a video (Bi-WKV's receptive field)

    def __init__(self, channels: int, gate_channels: int | None = None, hidden_ratio: int = 4):
        super().__init__()
        self.heads = max(1, channels // HEAD_DIM)
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.norm_cm = nn.LayerNorm(channels)
        self.channel_mix = ChannelMix3D(channels, hidden_ratio)
        self.gradient_checkpointing = False

    def forward(self, x, frames, gate=None):
        dtype = self.norm.weight.dtype
        pattern = "(v t) c h w -> v (t h w) c" if self.joint else "(v t) c h w -> (v h w) t c"
        seq = rearrange(x.to(dtype), pattern, t=frames)
        q, k, v = rearrange(self.qkv(self.norm(seq)), "n s (three m d) -> three n m s d", three=3, m=self.heads)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        seq = seq + self.out(rearrange(att, "n m s d -> n s (m d)"))
        videos = x.shape[0] // frames
        back = "v (t h w) c -> v t h w c" if self.joint else "(v h w) t c -> v t h w c"
        grid = rearrange(seq, back, v=videos, t=frames, h=x.shape[2])
        grid = grid + self.channel_mix(self.norm_cm(grid))
        return rearrange(grid, "v t h w c -> (v t) c h w").to(x.dtype)


class JointAttentionBlock(TemporalAttentionBlock):
    """Softmax self-attention over all T*H*W tokens of a video: the receptive field of
    Bi-WKV at quadratic cost."""

    joint = True
