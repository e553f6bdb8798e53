"""3D-VRWKV blocks: spatio-temporal token mixing of a whole clip with one Bi-WKV pass.

Features come as ComfyUI passes them, (videos * frames, C, H, W). Tokens are ordered
(t, h, w) into one sequence of L = T*H*W per video, so every token sees the whole clip at
a cost linear in L. Decay and bonus are divided by L as in Vision-RWKV, so the total decay
across a clip stays bounded whatever its length. A tuned block fixes that length
(`norm_frames`, from the weights' block spec) so that its decay means the same on a window,
the tuned clip and a longer clip; None (old files, untuned blocks) uses the call's own frames.

Before the projections each frame is interpolated with its predecessor,
`mu * x_t + (1 - mu) * x_{t-1}` (separate mu per projection and channel, x_{-1} = 0, the
RWKV token shift along time), then a depthwise 3x3 convolution mixes each frame spatially
(the paper's "spatial convolution on a temporally interpolated frame representation").
Output projections start at zero and the blocks are residual, so a freshly built block is
an exact identity; "local" init (1.0) of decay, bonus and every mu.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..kernels import bi_wkv


def is_temporal_parameter(name: str) -> bool:
    """The temporal parameters of a block, by parameter name: every interpolation weight
    `mu*`, the Bi-WKV `decay` and `first` (tuning gives them their own learning rate)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("mu") or leaf in ("decay", "first")


def time_shift(x: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """x_{t-1} for every frame t of (videos, T, H, W, C); before the first frame `first`
    (videos, 1, H, W, C) if given (the frame before a window), else zero."""
    if first is None:
        return F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
    return torch.cat([first.to(x.dtype), x[:, :-1]], 1)


def _shift(name: str, x: torch.Tensor) -> torch.Tensor:
    """time_shift for a block run on a whole clip (the stand-in for a window carry's shift)."""
    return time_shift(x)


class FrameMix(nn.Module):
    """Temporal interpolation with a per-channel mu, then a depthwise 3x3 spatial conv
    (identity at init) and a linear projection to `out_ch`."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.mu = nn.Parameter(torch.ones(in_ch))
        self.spatial = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        with torch.no_grad():
            self.spatial.weight.zero_()
            self.spatial.weight[:, 0, 1, 1] = 1.0
        self.proj = nn.Linear(in_ch, out_ch, bias=False)

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """x, prev: (V, T, H, W, C) -> (V, T, H, W, out_ch)."""
        mixed = self.mu * x + (1 - self.mu) * prev
        V, T, H, W, C = mixed.shape
        frames = rearrange(mixed, "v t h w c -> (v t) c h w")
        frames = rearrange(self.spatial(frames), "(v t) c h w -> v t h w c", v=V)
        return self.proj(frames)


class SpatialMix3D(nn.Module):
    """RWKV spatial mix over the whole clip: sigmoid(r) * BiWKV(k, v), then a zero-init
    output projection. r may read another feature (`gate`) than k and v do: the skip
    fusion gates the encoder skip with the decoder feature.

    On a window of a longer clip, `carry` (vrwkv/carry.py: FrameCarry) supplies the frame
    before the window for the token shift and the Bi-WKV state of the tokens around it."""

    norm_frames: int | None = None   # frames the decay is normalised by; None: the call's own

    def __init__(self, channels: int, gate_channels: int | None = None):
        super().__init__()
        self.key = FrameMix(channels, channels)
        self.value = FrameMix(channels, channels)
        self.receptance = FrameMix(gate_channels or channels, channels)
        self.decay = nn.Parameter(torch.ones(channels))   # w = decay / L
        self.first = nn.Parameter(torch.ones(channels))   # u = first / L
        self.output = nn.Linear(channels, channels, bias=False)
        nn.init.zeros_(self.output.weight)

    def decay_and_bonus(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token decay w and bonus u for a sequence of `tokens`: divided by its length
        (Vision-RWKV), so the total decay across a clip stays bounded whatever its length."""
        return self.decay / tokens, self.first / tokens

    def forward(self, x: torch.Tensor, gate: torch.Tensor, carry=None) -> torch.Tensor:
        """x: (V, T, H, W, C), gate: (V, T, H, W, Cg) -> (V, T, H, W, C)."""
        V, T, H, W, C = x.shape
        L = T * H * W
        shift = _shift if carry is None else carry.shift
        x_prev = shift("x", x)
        k = self.key(x, x_prev).reshape(V, L, C)
        v = self.value(x, x_prev).reshape(V, L, C)
        r = self.receptance(gate, shift("gate", gate) if gate is not x else x_prev)
        w, u = self.decay_and_bonus((self.norm_frames or T) * H * W)
        y = bi_wkv(w, u, k, v) if carry is None else carry.mix(w, u, k, v, H * W)
        return self.output(torch.sigmoid(r) * y.reshape(V, T, H, W, C))


class ChannelMix3D(nn.Module):
    """RWKV channel mix with temporal interpolation: sigmoid(r) * W_v(relu(W_k x)^2),
    W_v zero-init."""

    def __init__(self, channels: int, hidden_ratio: int):
        super().__init__()
        hidden = channels * hidden_ratio
        self.mu_k = nn.Parameter(torch.ones(channels))
        self.mu_r = nn.Parameter(torch.ones(channels))
        self.key = nn.Linear(channels, hidden, bias=False)
        self.value = nn.Linear(hidden, channels, bias=False)
        self.receptance = nn.Linear(channels, channels, bias=False)
        nn.init.zeros_(self.value.weight)

    def forward(self, x: torch.Tensor, carry=None) -> torch.Tensor:
        prev = time_shift(x) if carry is None else carry.shift("channel_mix", x)
        xk = self.mu_k * x + (1 - self.mu_k) * prev
        xr = self.mu_r * x + (1 - self.mu_r) * prev
        return torch.sigmoid(self.receptance(xr)) * self.value(torch.relu(self.key(xk)).square())


class VRWKVBlock3D(nn.Module):
    """Pre-norm residual 3D-VRWKV block on (V*T, C, H, W) features:
    x += SpatialMix(LN x, gate=LN g); x += ChannelMix(LN x).

    Without `gate_channels` the receptance reads x itself (the mid block); with it, it reads
    a second feature of that many channels (the skip fusion: x = skip, g = decoder). Runs
    in its parameters' dtype and returns the input dtype, so a fp16 UNet can carry an fp32
    block; an exact identity at init."""

    def __init__(self, channels: int, gate_channels: int | None = None, hidden_ratio: int = 4):
        super().__init__()
        self.channels, self.gate_channels = channels, gate_channels
        self.norm_x = nn.LayerNorm(channels)
        self.norm_gate = nn.LayerNorm(gate_channels) if gate_channels else None
        self.spatial_mix = SpatialMix3D(channels, gate_channels)
        self.norm_cm = nn.LayerNorm(channels)
        self.channel_mix = ChannelMix3D(channels, hidden_ratio)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, frames: int, gate: torch.Tensor | None = None, carry=None) -> torch.Tensor:
        """`carry`: the window's FrameCarry (vrwkv/carry.py) when x is a window of a longer clip."""
        if x.shape[0] % frames:
            raise ValueError(f"VRWKV block: batch {x.shape[0]} is not a whole number of {frames}-frame videos")
        if self.gradient_checkpointing and torch.is_grad_enabled() and carry is None:
            delta = checkpoint(self._delta, x, gate, frames, use_reentrant=False)
        else:
            delta = self._delta(x, gate, frames, carry)
        return x + delta

    def _delta(self, x, gate, frames, carry=None):
        dtype = self.norm_x.weight.dtype
        seq = rearrange(x.to(dtype), "(v t) c h w -> v t h w c", t=frames)
        h = self.norm_x(seq)
        g = h if gate is None else self.norm_gate(rearrange(gate.to(dtype), "(v t) c h w -> v t h w c", t=frames))
        d_spatial = self.spatial_mix(h, g, carry)
        d_channel = self.channel_mix(self.norm_cm(seq + d_spatial), carry)
        return rearrange(d_spatial + d_channel, "v t h w c -> (v t) c h w").to(x.dtype)
