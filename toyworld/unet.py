"""A small text-to-image UNet with the module layout of ComfyUI's openaimodel.UNetModel, so
the pack's patch and ComfyUI's transformer patches apply to it unchanged: the toy world's
model on pixels and, on 4 latent channels, the unit tests' UNet (latent_unet).

The decoder calls `output_block_patch(h, hsp, transformer_options)` before each skip
concatenation (transformer_options["block"] = ("output", i)); the transformer blocks offer
ComfyUI's patch points with its call conventions (attn1/attn2 patches, output patches and
replacements, middle_patch). Conditioning is strong on purpose: cross-attention at the
transformer levels and the pooled caption added to the timestep embedding (as ADM's class
embedding), which every ResBlock reads.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def attention(q, k, v, heads: int) -> torch.Tensor:
    """(B, N, heads*d) queries against (B, M, heads*d) keys/values, as ComfyUI's optimized_attention."""
    b, n, inner = q.shape
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, inner // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, inner)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, channels, out_channels, emb_dim):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.channels = self.out_channels = channels
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.channels = self.out_channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x, context=None, value=None):
        context = x if context is None else context
        v = self.to_v(context if value is None else value)
        return self.to_out(attention(self.to_q(x), self.to_k(context), v, self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention, feed-forward; ComfyUI's patch points in its order."""

    def __init__(self, dim, n_heads, d_head, context_dim):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.attn1 = CrossAttention(dim, dim, n_heads, d_head)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head)
        self.ff = FeedForward(dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, transformer_options):
        patches = transformer_options.get("patches", {})
        replace = transformer_options.get("patches_replace", {})
        extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"], extra["dim_head"], extra["attn_precision"] = self.n_heads, self.d_head, None
        block = transformer_options.get("block")
        key = None if block is None else (block[0], block[1], transformer_options.get("block_index", 0))

        x = x + self._stage(1, self.norm1(x), None, patches, replace, key, block, extra)
        for p in patches.get("middle_patch", []):
            x = p(x, extra)
        x = x + self._stage(2, self.norm2(x), context, patches, replace, key, block, extra)
        return x + self.ff(self.norm3(x))

    def _stage(self, i, n, context, patches, replace, key, block, extra):
        """attn<i> with ComfyUI's patches around it: attn<i>_patch may change the normed input,
        context and value (self-attention: context = value = n), then the attention or its
        replacement, then attn<i>_output_patch."""
        attn, value = (self.attn1, self.attn2)[i - 1], None
        if f"attn{i}_patch" in patches:
            context = n if context is None else context
            value = context
            for p in patches[f"attn{i}_patch"]:
                n, context, value = p(n, context, value, extra)
        n = self._attend(attn, replace.get(f"attn{i}", {}), key, block, n, context, value, extra)
        for p in patches.get(f"attn{i}_output_patch", []):
            n = p(n, extra)
        return n

    @staticmethod
    def _attend(attn, replacements, key, block, n, context, value, extra):
        """The attention, or its replacement (looked up by transformer key, then by block),
        which receives the projected q, k, v as ComfyUI passes them."""
        chosen = replacements.get(key) or replacements.get(block)
        if chosen is None:
            return attn(n, context=context, value=value)
        context = n if context is None else context
        value = context if value is None else value
        out = chosen(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra)
        return attn.to_out(out)


class SpatialTransformer(nn.Module):
    def __init__(self, channels, n_heads, d_head, context_dim, depth=1):
        super().__init__()
        self.in_channels = channels
        inner = n_heads * d_head
        self.norm = norm(channels)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, context, transformer_options):
        b, c, h, w = x.shape
        transformer_options["activations_shape"] = list(x.shape)
        t = self.proj_in(self.norm(x).movedim(1, 3).flatten(1, 2))
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            t = block(t, context, transformer_options)
        return x + self.proj_out(t).reshape(b, h, w, c).movedim(3, 1)


class ToyUNet(nn.Module):
    """eps-prediction UNet on (B, 3, 32, 32) pixels. `config` (JSON-able) rebuilds it.

    Its last layer predicts v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans and Ho 2022) and
    returns eps = sqrt(a) v + sqrt(1 - a) x_t, with a = alphas_cumprod[t] of SD1.5's schedule:
    to the outside (ComfyUI, the pack) it is an epsilon model, but its x0 estimate at high
    noise no longer multiplies the eps error by sigma (up to 14.6), which left a first,
    plain-eps training run sampling noise after 400 steps at a denoising loss of 0.03."""

    def __init__(self, base=32, mult=(1, 2, 2), attention_levels=(1, 2), context_dim=64, d_head=16,
                 in_channels=3):
        super().__init__()
        self.config = dict(base=base, mult=list(mult), attention_levels=list(attention_levels),
                           context_dim=context_dim, d_head=d_head, in_channels=in_channels)
        self.model_channels = max(base, 64)     # sinusoid width of the timestep
        emb_dim = 4 * base
        self.time_embed = nn.Sequential(nn.Linear(self.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)
        self.label_emb = nn.Sequential(nn.Linear(context_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def transformer(ch):
            return SpatialTransformer(ch, ch // d_head, d_head, context_dim)

        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(in_channels, base, 3, padding=1)])])
        skips, ch = [base], base
        for level, m in enumerate(mult):
            if level > 0:
                self.input_blocks.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
            layers = [ResBlock(ch, base * m, emb_dim)]
            ch = base * m
            if level in attention_levels:
                layers.append(transformer(ch))
            self.input_blocks.append(nn.ModuleList(layers))
            skips.append(ch)
        self.middle_block = nn.ModuleList([ResBlock(ch, ch, emb_dim), transformer(ch), ResBlock(ch, ch, emb_dim)])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for i in range(2):   # one block per encoder skip of this level (ResBlock, then Downsample or stem)
                out = base * mult[level]
                layers = [ResBlock(ch + skips.pop(), out, emb_dim)]
                ch = out
                if level in attention_levels:
                    layers.append(transformer(ch))
                if level > 0 and i == 1:
                    layers.append(Upsample(ch))
                self.output_blocks.append(nn.ModuleList(layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))

    @staticmethod
    def _run(layers, h, emb, context, transformer_options):
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, transformer_options)
                transformer_options["transformer_index"] += 1
            else:
                h = layer(h)
        return h

    def forward(self, x, timesteps, context, transformer_options=None, **kwargs):
        """x (B, 3, H, W), timesteps (B,) in 0..999, context (B, tokens, context_dim) -> eps."""
        a = self.alphas_cumprod.to(x.device)[timesteps.long()].to(x.dtype)[:, None, None, None]
        return a.sqrt() * self.forward_v(x, timesteps, context, transformer_options) + (1 - a).sqrt() * x

    def forward_v(self, x, timesteps, context, transformer_options=None):
        """The network's own output, v (what training fits)."""
        transformer_options = dict(transformer_options or {})
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        emb = emb + self.label_emb(context.mean(dim=1))
        hs, h = [], x
        for i, block in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            h = self._run(block, h, emb, context, transformer_options)
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        h = self._run(self.middle_block, h, emb, context, transformer_options)
        for i, block in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            hsp = hs.pop()
            for patch in patches.get("output_block_patch", []):
                h, hsp = patch(h, hsp, transformer_options)
            h = self._run(block, torch.cat([h, hsp], dim=1), emb, context, transformer_options)
        return self.out(h)


def latent_unet(base: int = 8, context_dim: int = 12) -> ToyUNet:
    """A miniature SD1.5-style UNet on 4 latent channels (two levels, attention in the mid block
    only): the unit tests' stand-in for ComfyUI's UNetModel."""
    return ToyUNet(base=base, mult=(1, 2), attention_levels=(), context_dim=context_dim, in_channels=4)
