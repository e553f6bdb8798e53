"""The VRWKV block configuration as one frozen value: where blocks go and what each holds.

Weights files keep it in their block spec (layout.block_spec) under the first files' key names
(SPEC_KEYS); `from_spec` gives keys an older file lacks the paper's values, so it loads as saved.
"""

from dataclasses import asdict, dataclass, replace

PLACEMENTS = ("skip+mid", "skip", "mid")
SKIP_FUSIONS = ("gate", "merge")
FRAME_ATTENTIONS = ("self", "first+previous")    # vrwkv/frame_attention.py
PADS = ("zero", "repeat", "repeat-edits")        # blocks.ChannelMix3D
# field -> key in the weights' block spec
SPEC_KEYS = {"placement": "placement", "min_level": "min_level", "channel_mix": "hidden_ratio",
             "rank": "rank_ratio", "fused_rkv": "fused_mix", "skip_fusion": "skip_fusion",
             "half_precision_sampling": "sample_in_unet_dtype", "channel_mix_max_level": "channel_mix_max_level",
             "frame_attention": "frame_attention", "end_percent": "end_percent",
             "channel_mix_pad": "channel_mix_pad", "edit_end_percent": "edit_end_percent"}


@dataclass(frozen=True)
class BlockConfig:
    """placement: blocks on the encoder skips ("skip"), on the mid-block output ("mid"), or
    both (the paper). min_level: blocks only at resolution levels >= min_level (0: latent size,
    1: half of it, ...). channel_mix: RWKV's channel-mix width as a multiple of the channels
    (0: none); channel_mix_max_level: channel mixes only at levels <= this one (None: all),
    where channels, and so their parameters, are fewest. rank: r, k, v and output projections
    as two factors through rank x channels (None: one matrix). fused_rkv: r, k, v in one
    projection / interpolation / convolution pass. skip_fusion: the decoder feature only gates
    the skip ("gate") or k and v read both ("merge"). half_precision_sampling: a float16/bfloat16
    UNet's blocks sample in its dtype (a run-time choice, not a layout). frame_attention: SD's
    own self-attention per frame ("self") or each frame's reading the first and the previous
    frame ("first+previous", vrwkv/frame_attention.py). end_percent: sampling runs the blocks from
    its start (the highest noise) to this fraction of the way (ComfyUI's percent, as ControlNet's
    end_percent), then skips them; 1: all the way (a run-time choice, like half_precision_sampling);
    edit_end_percent: the same in edits (inverting a clip and sampling from its inversion,
    ddim.EDIT_KEY; None: end_percent), where the layout comes from the source and the blocks,
    acting late, add flicker.
    channel_mix_pad: what the channel mix reads before frame 0: zero (RWKV's), frame 0 itself
    ("repeat"), or zero but frame 0 itself in edits ("repeat-edits": inverting a clip and sampling
    from its inversion, ddim.EDIT_KEY). The spatial mix always reads zero there: that tells the
    blocks where the clip begins, which generation needs and an edit has from its source."""

    placement: str = "skip+mid"
    min_level: int = 0
    channel_mix: float = 4
    rank: float | None = None
    fused_rkv: bool = False
    skip_fusion: str = "gate"
    half_precision_sampling: bool = False
    channel_mix_max_level: int | None = None
    frame_attention: str = "self"
    end_percent: float = 1.0
    channel_mix_pad: str = "zero"
    edit_end_percent: float | None = None

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if not (isinstance(self.min_level, int) and self.min_level >= 0):
            raise ValueError(f"min_level must be an integer >= 0 (0: all levels), got {self.min_level!r}")
        if self.channel_mix < 0:
            raise ValueError(f"channel_mix must be >= 0 (0: no channel mix), got {self.channel_mix}")
        if self.rank is not None and not 0 < self.rank <= 1:
            raise ValueError(f"rank must be in (0, 1] (or None for full-rank projections), got {self.rank}")
        if self.skip_fusion not in SKIP_FUSIONS:
            raise ValueError(f"skip_fusion must be one of {SKIP_FUSIONS}, got {self.skip_fusion!r}")
        if self.frame_attention not in FRAME_ATTENTIONS:
            raise ValueError(f"frame_attention must be one of {FRAME_ATTENTIONS}, got {self.frame_attention!r}")
        if self.channel_mix_pad not in PADS:
            raise ValueError(f"channel_mix_pad must be one of {PADS}, got {self.channel_mix_pad!r}")
        if not 0 < self.end_percent <= 1:
            raise ValueError(f"end_percent must be in (0, 1] (1: the blocks act through all of sampling), "
                             f"got {self.end_percent}")
        if self.edit_end_percent is not None and not 0 < self.edit_end_percent <= 1:
            raise ValueError(f"edit_end_percent must be in (0, 1] (or None: as end_percent), got {self.edit_end_percent}")
        if self.channel_mix_max_level is not None and not (isinstance(self.channel_mix_max_level, int)
                                                           and self.channel_mix_max_level >= 0):
            raise ValueError("channel_mix_max_level must be an integer >= 0 (or None: every level), got "
                             f"{self.channel_mix_max_level!r}")

    def replace(self, **changes) -> "BlockConfig":
        return replace(self, **changes)

    def at_level(self, level: int) -> "BlockConfig":
        """What a block at resolution `level` holds: no channel mix above channel_mix_max_level."""
        if self.channel_mix_max_level is not None and level > self.channel_mix_max_level:
            return replace(self, channel_mix=0)
        return self

    def end(self, edit: bool) -> float:
        """The fraction of sampling the blocks act in, in an edit or not."""
        return self.edit_end_percent if edit and self.edit_end_percent is not None else self.end_percent

    def to_spec(self) -> dict:
        """The fields under their block-spec keys (JSON-able)."""
        return {SPEC_KEYS[k]: v for k, v in asdict(self).items()}

    @classmethod
    def from_spec(cls, spec: dict) -> "BlockConfig":
        """The configuration a block spec was saved with (keys it lacks: the paper's values)."""
        return cls(**{field: spec[key] for field, key in SPEC_KEYS.items() if key in spec})


# The paper's block: channel mix 4x, full projections, separate r/k/v passes, skip+mid.
PAPER = BlockConfig()
# The cheapest block: no channel mix, rank-1/4 projections, r/k/v fused.
LEAN = BlockConfig(channel_mix=0, rank=0.25, fused_rkv=True)
# What VRWKV Patch Model builds by default: the paper's block, each frame's attention reading the
# first and previous frame, the blocks acting in the first half of sampling (the first 20% in
# edits), the channel mix reading frame 0 as its own past in edits (bench/results/quality_500steps_cpu.md,
# quality_16_500steps_cpu.md, quality_textured_500steps_cpu.md; cost: pipeline_cost_cpu_full_64px_fp32.md).
# placement "mid" tunes in a quarter of the memory but no longer clearly beats per-frame generation on
# 16 textured frames (quality_textured_16_500steps_cpu.md; bench/README.md, the cost frontier).
DEFAULT = PAPER.replace(frame_attention="first+previous", end_percent=0.5, channel_mix_pad="repeat-edits",
                        edit_end_percent=0.2)
