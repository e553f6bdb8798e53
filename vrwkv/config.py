"""One VRWKV configuration: where the blocks go and what each block holds, as one frozen value.

Weights files store it in their layout metadata (the block spec, layout.block_spec) under the
key names the first files used; `from_spec` fills in what older files lack, so every file
loads as the blocks it was saved with.
"""

from dataclasses import asdict, dataclass, replace

PLACEMENTS = ("skip+mid", "skip", "mid")
SKIP_FUSIONS = ("gate", "merge")
# field -> key in the weights' block spec
SPEC_KEYS = {"placement": "placement", "min_level": "min_level", "channel_mix": "hidden_ratio",
             "rank": "rank_ratio", "fused_rkv": "fused_mix", "skip_fusion": "skip_fusion",
             "half_precision_sampling": "sample_in_unet_dtype", "channel_mix_max_level": "channel_mix_max_level"}


@dataclass(frozen=True)
class BlockConfig:
    """placement: blocks fusing each encoder skip with the decoder ("skip"), on the mid-block
    output ("mid"), or both (the paper). min_level: the lowest UNet resolution level that gets
    blocks (0 = all; 1 = half the latent size and below, ...). channel_mix: width of RWKV's
    channel mix as a multiple of the channels (0: none). rank: the r, k, v and output
    projections as two factors through rank * channels (None: full matrices). fused_rkv: r, k, v
    in one projection / interpolation / convolution pass. skip_fusion: "gate" (the decoder
    feature only gates the skip) or "merge" (k and v read both). half_precision_sampling: a
    float16/bfloat16 UNet's blocks sample in its dtype (a run-time choice, not a layout).
    channel_mix_max_level: the channel mix only in blocks at this resolution level or above
    it (0 = latent size; None: every level): the high-resolution levels have the fewest
    channels, so their channel mixes hold few parameters."""

    placement: str = "skip+mid"
    min_level: int = 0
    channel_mix: float = 4
    rank: float | None = None
    fused_rkv: bool = False
    skip_fusion: str = "gate"
    half_precision_sampling: bool = False
    channel_mix_max_level: int | None = None

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

    def to_spec(self) -> dict:
        """The fields under their block-spec keys (JSON-able)."""
        return {SPEC_KEYS[k]: v for k, v in asdict(self).items()}

    @classmethod
    def from_spec(cls, spec: dict) -> "BlockConfig":
        """The configuration a block spec was saved with; keys an older file lacks take the
        values those files were built with (the fields' defaults: the paper's block)."""
        return cls(**{field: spec[key] for field, key in SPEC_KEYS.items() if key in spec})


# The paper's block: channel mix 4x, full projections, separate r/k/v passes, skip+mid.
PAPER = BlockConfig()
# What VRWKV Patch Model builds by default (bench/results/pipeline_cost_*.md, quality_cpu.md).
DEFAULT = BlockConfig(channel_mix=0, rank=0.25, fused_rkv=True)
