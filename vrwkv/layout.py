"""Where VRWKV blocks go in an SD1.5-style UNet, read off the UNet's own modules.

ComfyUI's UNet hands each decoder ("output") block's input `h` and the encoder skip it pops
to `output_block_patch(h, hsp, transformer_options)`; at output block 0, `h` is the
mid-block output. Levels count resolution: 0 = latent size, 1 = half, ...
"""

from dataclasses import dataclass

from .config import BlockConfig

# Resolution choice -> lowest level that gets blocks. The high-resolution levels hold most
# tokens, so dropping them saves most of the memory.
LEVEL_CHOICES = {"all": 0, "half and below": 1, "quarter and below": 2, "lowest only": 3}


@dataclass(frozen=True)
class SkipPoint:
    output_index: int
    level: int
    h_channels: int
    skip_channels: int


@dataclass(frozen=True)
class UNetLayout:
    skips: tuple
    mid_channels: int
    mid_level: int


def unet_layout(unet) -> UNetLayout:
    """Skip points of a ComfyUI openaimodel.UNetModel; ValueError for another architecture."""
    try:
        inputs, outputs = list(unet.input_blocks), list(unet.output_blocks)
    except AttributeError:
        raise ValueError(f"{type(unet).__name__} has no input_blocks/output_blocks: not an SD1.5-style UNet") from None
    if len(inputs) != len(outputs) or not inputs:
        raise ValueError(f"UNet has {len(inputs)} input and {len(outputs)} output blocks; expected equal numbers")
    chans, levels, level = [], [], 0
    for block in inputs:
        first = block[0]
        if type(first).__name__ == "Downsample":
            level += 1
        out = getattr(first, "out_channels", None)
        if not isinstance(out, int):
            raise ValueError(f"cannot read the output channels of input block {type(first).__name__}")
        chans.append(out)
        levels.append(level)
    skips = []
    for o, block in enumerate(outputs):
        i = len(inputs) - 1 - o
        total = getattr(block[0], "channels", None)
        if not isinstance(total, int) or total <= chans[i]:
            raise ValueError(f"cannot read the input channels of output block {o}")
        skips.append(SkipPoint(o, levels[i], total - chans[i], chans[i]))
    return UNetLayout(tuple(skips), mid_channels=skips[0].h_channels, mid_level=levels[-1])


def block_spec(layout: UNetLayout, config: BlockConfig) -> dict:
    """The blocks to build as a JSON-able spec: BlockConfig.to_spec() and "blocks":
    {"mid" or "skip_<output index>": {"channels", "gate_channels", "level"}}."""
    blocks = {}
    if "mid" in config.placement and layout.mid_level >= config.min_level:
        blocks["mid"] = {"channels": layout.mid_channels, "gate_channels": None, "level": layout.mid_level}
    if "skip" in config.placement:
        for p in layout.skips:
            if p.level >= config.min_level:
                blocks[f"skip_{p.output_index}"] = {"channels": p.skip_channels, "gate_channels": p.h_channels,
                                                    "level": p.level}
    if not blocks:
        deepest = max(layout.mid_level, *(p.level for p in layout.skips))
        raise ValueError(f"no block selected: this UNet's lowest resolution level is {deepest}; "
                         "choose a resolution setting that keeps it")
    return {**config.to_spec(), "blocks": blocks}
