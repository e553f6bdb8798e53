"""3D-VRWKV blocks: spatio-temporal token mixing of a whole clip with one Bi-WKV pass.

Each video's tokens, ordered (t, h, w), form one sequence, so every token sees the clip at
a cost linear in its length. Projections read each frame interpolated with its predecessor
(RWKV's token shift along time) through a depthwise 3x3 conv, as in the paper; zero-init
output projections make a new block an exact identity.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ..kernels import bi_wkv
from .config import PAPER, BlockConfig


def projection(in_ch: int, out_ch: int, rank_ratio: float | None, zero: bool = False) -> nn.Module:
    """Bias-free in_ch -> out_ch: one matrix, or with `rank_ratio` two factors through
    ratio * min(in_ch, out_ch); `zero` zero-initialises the (last) factor."""
    if rank_ratio is None:
        layers = [nn.Linear(in_ch, out_ch, bias=False)]
    else:
        rank = max(1, round(rank_ratio * min(in_ch, out_ch)))
        layers = [nn.Linear(in_ch, rank, bias=False), nn.Linear(rank, out_ch, bias=False)]
    if zero:
        nn.init.zeros_(layers[-1].weight)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def identity_depthwise_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 1.0
    return conv


def frame_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 2D convolution applied to every frame of (V, T, H, W, C)."""
    V = x.shape[0]
    frames = conv(rearrange(x, "v t h w c -> (v t) c h w"))
    return rearrange(frames, "(v t) c h w -> v t h w c", v=V)


def is_temporal_parameter(name: str) -> bool:
    """Every `mu*`, `decay` and `first`: the parameters tuning gives their own learning rate."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("mu") or leaf in ("decay", "first")


def time_shift(x: torch.Tensor, first: torch.Tensor | None = None, pad: str = "zero") -> torch.Tensor:
    """x_{t-1} for every frame t of (videos, T, H, W, C); before frame 0 `first`
    (videos, 1, H, W, C), the frame before a window, or else zero (pad "zero") or frame 0
    itself (pad "repeat": a still past)."""
    if first is None and pad == "zero":
        return F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
    return torch.cat([x[:, :1] if first is None else first.to(x.dtype), x[:, :-1]], 1)


def _shift(name: str, x: torch.Tensor) -> torch.Tensor:
    """The token shift on a whole clip (FrameCarry.shift on a window)."""
    return time_shift(x)


class FrameMix(nn.Module):
    """mu * x + (1 - mu) * prev per channel, a depthwise 3x3 conv, a projection to `out_ch`."""

    def __init__(self, in_ch: int, out_ch: int, rank_ratio: float | None = None):
        super().__init__()
        self.mu = nn.Parameter(torch.ones(in_ch))
        self.spatial = identity_depthwise_conv(in_ch)
        self.proj = projection(in_ch, out_ch, rank_ratio)

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """x, prev: (V, T, H, W, C) -> (V, T, H, W, out_ch)."""
        return self.proj(frame_conv(self.spatial, self.mu * x + (1 - self.mu) * prev))


class FusedFrameMix(nn.Module):
    """r, k and v in one pass: one projection (two when r reads a gate feature), then one
    interpolation and one depthwise conv over all three. Interpolating after the (linear)
    projection gives the same kind of map as FrameMix with one time shift and no input copies."""

    def __init__(self, in_ch: int, channels: int, gate_channels: int | None, rank_ratio: float | None):
        super().__init__()
        self.channels = channels
        self.proj = projection(in_ch, (2 if gate_channels else 3) * channels, rank_ratio)
        self.proj_gate = projection(gate_channels, channels, rank_ratio) if gate_channels else None
        self.mu = nn.Parameter(torch.ones(3 * channels))
        self.spatial = identity_depthwise_conv(3 * channels)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None, shift=_shift) -> tuple:
        """x: (V, T, H, W, in_ch), gate: (..., gate_ch) or None -> r, k, v (V, T, H, W, C)."""
        rkv = self.proj(x) if self.proj_gate is None else torch.cat([self.proj_gate(gate), self.proj(x)], -1)
        prev = shift("rkv", rkv)
        rkv = frame_conv(self.spatial, self.mu * rkv + (1 - self.mu) * prev)
        return rkv.split(self.channels, dim=-1)


class SpatialMix3D(nn.Module):
    """sigmoid(r) * BiWKV(k, v) over the whole clip, then a zero-init output projection; r may
    read another feature (`gate`: the decoder's in a skip fusion)."""

    # Frames the decay is divided by, fixed by tuning so that a window, the tuned clip and a
    # longer clip share one per-token decay; None (untuned): the call's own.
    norm_frames: int | None = None

    def __init__(self, channels: int, gate_channels: int | None = None, rank_ratio: float | None = None,
                 fused_mix: bool = False, skip_fusion: str = "gate"):
        super().__init__()
        self.merge = bool(gate_channels) and skip_fusion == "merge"   # k, v read cat(x, gate)
        kv_ch = channels + gate_channels if self.merge else channels
        self.fused_mix = fused_mix
        if fused_mix:
            self.rkv = FusedFrameMix(kv_ch, channels, gate_channels, rank_ratio)
        else:
            self.key = FrameMix(kv_ch, channels, rank_ratio)
            self.value = FrameMix(kv_ch, channels, rank_ratio)
            self.receptance = FrameMix(gate_channels or channels, channels, rank_ratio)
        self.decay = nn.Parameter(torch.ones(channels))   # w = decay / L
        self.first = nn.Parameter(torch.ones(channels))   # u = first / L
        self.output = projection(channels, channels, rank_ratio, zero=True)

    def decay_and_bonus(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token decay and bonus, decay / tokens and first / tokens (Vision-RWKV), in float32
        or wider: in float16 they leave its normal range at tens of thousands of tokens."""
        dtype = torch.promote_types(self.decay.dtype, torch.float32)
        return self.decay.to(dtype) / tokens, self.first.to(dtype) / tokens

    def forward(self, x: torch.Tensor, gate: torch.Tensor, carry=None) -> torch.Tensor:
        """x: (V, T, H, W, C), gate: (V, T, H, W, Cg) -> (V, T, H, W, C)."""
        V, T, H, W, C = x.shape
        L = T * H * W
        shift = _shift if carry is None else carry.shift
        r, k, v = self.receptance_key_value(x, gate, shift)
        w, u = self.decay_and_bonus((self.norm_frames or T) * H * W)
        k, v = k.reshape(V, L, C), v.reshape(V, L, C)
        y = bi_wkv(w, u, k, v) if carry is None else carry.mix(w, u, k, v, H * W)
        return self.output(torch.sigmoid(r) * y.reshape(V, T, H, W, C))

    def receptance_key_value(self, x: torch.Tensor, gate: torch.Tensor, shift=_shift) -> tuple:
        """r from the gate, k and v from x (and the gate when merging), (V, T, H, W, C) each."""
        kv_in = torch.cat([x, gate], -1) if self.merge else x
        if self.fused_mix:
            return self.rkv(kv_in, gate if gate is not x else None, shift)
        x_prev = shift("x", kv_in)
        k, v = self.key(kv_in, x_prev), self.value(kv_in, x_prev)
        return self.receptance(gate, shift("gate", gate) if gate is not x else x_prev), k, v


class ChannelMix3D(nn.Module):
    """RWKV channel mix with token shift: sigmoid(r) * W_v(relu(W_k x)^2), W_v zero-init;
    `pad` (config.PADS): what frame 0 reads as its predecessor, zero or frame 0 itself."""

    def __init__(self, channels: int, hidden_ratio: float, pad: str = "zero"):
        super().__init__()
        self.pad = pad
        hidden = round(channels * hidden_ratio)
        self.mu_k = nn.Parameter(torch.ones(channels))
        self.mu_r = nn.Parameter(torch.ones(channels))
        self.key = nn.Linear(channels, hidden, bias=False)
        self.value = nn.Linear(hidden, channels, bias=False)
        self.receptance = nn.Linear(channels, channels, bias=False)
        nn.init.zeros_(self.value.weight)

    def forward(self, x: torch.Tensor, carry=None, edit: bool = False) -> torch.Tensor:
        """`edit`: the call inverts or samples an edit (ddim.EDIT_KEY)."""
        pad = "repeat" if self.pad == "repeat" or (edit and self.pad == "repeat-edits") else "zero"
        prev = time_shift(x, pad=pad) if carry is None else carry.shift("channel_mix", x, pad)
        xk = self.mu_k * x + (1 - self.mu_k) * prev
        xr = self.mu_r * x + (1 - self.mu_r) * prev
        return torch.sigmoid(self.receptance(xr)) * self.value(torch.relu(self.key(xk)).square())


HALF = (torch.float16, torch.bfloat16)


class CastCache:
    """A module's parameters cast to another dtype, kept until one changes (version or
    storage). Inference tensors track no version, so they are cast on every call."""

    def __init__(self):
        self.key, self.cast = None, {}

    def __deepcopy__(self, memo):
        return CastCache()

    def tensors(self, module: nn.Module, dtype: torch.dtype) -> dict:
        named = list(module.named_parameters())
        if any(p.is_inference() for _, p in named):
            return {name: p.detach().to(dtype) for name, p in named}
        key = (dtype, tuple((name, p.data_ptr(), p._version) for name, p in named))
        if key != self.key:
            self.key, self.cast = key, {name: p.detach().to(dtype) for name, p in named}
        return self.cast


class VRWKVBlock3D(nn.Module):
    """Pre-norm residual block on (V*T, C, H, W): x += SpatialMix(LN x, gate=LN g);
    x += ChannelMix(LN x); g is x (mid block) or the decoder feature (skip block). Runs in its
    parameters' dtype and returns the input's (a fp16 UNet can carry an fp32 block), or with
    half_precision_sampling and no gradients runs a cached copy in the features' half dtype."""

    def __init__(self, channels: int, gate_channels: int | None = None, config: BlockConfig = PAPER):
        super().__init__()
        self.channels, self.gate_channels = channels, gate_channels
        with torch.inference_mode(False):
            self.norm_x = nn.LayerNorm(channels)
            self.norm_gate = nn.LayerNorm(gate_channels) if gate_channels else None
            self.spatial_mix = SpatialMix3D(channels, gate_channels, config.rank, config.fused_rkv, config.skip_fusion)
            self.norm_cm = nn.LayerNorm(channels) if config.channel_mix else None
            self.channel_mix = (ChannelMix3D(channels, config.channel_mix, config.channel_mix_pad)
                                if config.channel_mix else None)
        self.gradient_checkpointing = False
        self.sample_in_unet_dtype = config.half_precision_sampling
        self.cast = CastCache()

    def _apply(self, fn, recurse=True):
        """Moves and casts outside ComfyUI's inference mode, so tuning can train the parameters."""
        self.cast = CastCache()
        with torch.inference_mode(False):
            return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, frames: int, gate: torch.Tensor | None = None, carry=None,
                edit: bool = False) -> torch.Tensor:
        """`carry`: the window's carry.FrameCarry when x is a window of a longer clip; `edit`:
        the call inverts or samples an edit (ddim.EDIT_KEY)."""
        if x.shape[0] % frames:
            raise ValueError(f"VRWKV block: batch {x.shape[0]} is not a whole number of {frames}-frame videos")
        if (self.sample_in_unet_dtype and not torch.is_grad_enabled() and x.dtype in HALF
                and x.dtype != self.norm_x.weight.dtype):
            return functional_call(self, self.cast.tensors(self, x.dtype), (x, frames, gate, carry, edit))
        if self.gradient_checkpointing and torch.is_grad_enabled() and carry is None:
            delta = checkpoint(self._delta, x, gate, frames, use_reentrant=False)
        else:
            delta = self._delta(x, gate, frames, carry, edit)
        return x + delta

    def _delta(self, x, gate, frames, carry=None, edit=False):
        dtype = self.norm_x.weight.dtype
        seq = rearrange(x.to(dtype), "(v t) c h w -> v t h w c", t=frames)
        h = self.norm_x(seq)
        g = h if gate is None else self.norm_gate(rearrange(gate.to(dtype), "(v t) c h w -> v t h w c", t=frames))
        delta = self.spatial_mix(h, g, carry)
        if self.channel_mix is not None:
            delta = delta + self.channel_mix(self.norm_cm(seq + delta), carry, edit)
        return rearrange(delta, "v t h w c -> (v t) c h w").to(x.dtype)
