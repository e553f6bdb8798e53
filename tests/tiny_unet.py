"""A miniature UNet with the module layout and patch protocol of ComfyUI's
openaimodel.UNetModel (input_blocks / middle_block / output_blocks; ResBlock and
Downsample with `channels` / `out_channels`; `output_block_patch(h, hsp,
transformer_options)` called before each skip concatenation with
transformer_options["block"] = ("output", i)). Unit tests use it where ComfyUI is absent;
the integration tier runs the real UNet."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, channels, out_channels, emb_dim):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels
        self.norm = nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(h))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.channels = self.out_channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Conv(nn.Conv2d):
    def forward(self, x, emb):
        return super().forward(x)


class TinyUNet(nn.Module):
    """eps-prediction UNet: 4 latent channels, base width c, two levels, text context."""

    def __init__(self, c=8, context_dim=12, emb_dim=16):
        super().__init__()
        self.emb_dim = emb_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.context = nn.Linear(context_dim, emb_dim)
        self.input_blocks = nn.ModuleList([
            nn.ModuleList([Conv(4, c, 3, padding=1)]),
            nn.ModuleList([ResBlock(c, c, emb_dim)]),
            nn.ModuleList([Downsample(c)]),
            nn.ModuleList([ResBlock(c, 2 * c, emb_dim)]),
        ])
        self.middle_block = nn.ModuleList([ResBlock(2 * c, 2 * c, emb_dim)])
        self.output_blocks = nn.ModuleList([
            nn.ModuleList([ResBlock(4 * c, 2 * c, emb_dim)]),
            nn.ModuleList([ResBlock(3 * c, 2 * c, emb_dim), Upsample(2 * c)]),
            nn.ModuleList([ResBlock(3 * c, c, emb_dim)]),
            nn.ModuleList([ResBlock(2 * c, c, emb_dim)]),
        ])
        self.out = nn.Conv2d(c, 4, 3, padding=1)

    def forward(self, x, timesteps, context, transformer_options=None):
        transformer_options = dict(transformer_options or {})
        patches = transformer_options.get("patches", {})
        half = self.emb_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
        args = timesteps.float()[:, None] * freqs[None]
        emb = self.time(torch.cat([args.cos(), args.sin()], dim=1)) + self.context(context.mean(dim=1))
        hs, h = [], x
        for i, block in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            for layer in block:
                h = layer(h, emb)
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        for layer in self.middle_block:
            h = layer(h, emb)
        for i, block in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            hsp = hs.pop()
            for patch in patches.get("output_block_patch", []):
                h, hsp = patch(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            for layer in block:
                h = layer(h, emb)
        return self.out(h)
