"""The methods the quality benchmark compares, by name; "name@lr" (e.g. "tav@1e-3") runs one at
that learning rate instead of its default (Tune-A-Video: its recipe's; VRWKV: the tune node's
`learning_rate`, which the blocks' multipliers scale)."""

from dataclasses import replace

from bench.configs import CONFIGS
from toyworld.pipeline import Method
from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv.config import DEFAULT, LEAN, PAPER  # noqa: E402
from vrwkv_editor.vrwkv.tuning import TuneSettings  # noqa: E402

RECIPE_LR = 3e-5              # Tune-A-Video's recipe
NODE_LR = TuneSettings().lr   # VRWKV Tune On Video's default learning_rate
NODE_STEPS = TuneSettings().steps


def vrwkv(name: str, config=DEFAULT, **options) -> Method:
    return Method(name, "vrwkv", lr=NODE_LR, config=config, **options)


METHODS = {
    "untuned": Method("per-frame (no tuning)", "plain"),
    "tav": Method("Tune-A-Video", "tav", lr=RECIPE_LR),
    "default": vrwkv("VRWKV, the nodes' defaults"),
    "paper": vrwkv("VRWKV, the paper's block", PAPER),
    "lean": vrwkv("VRWKV, lean block", LEAN),
    # one option at a time on the paper's block, and on the lean block
    "paper-cm0": vrwkv("paper, no channel mix", PAPER.replace(channel_mix=0)),
    "paper-cm1": vrwkv("paper, channel mix 1x", PAPER.replace(channel_mix=1)),
    "paper-r4": vrwkv("paper, rank 1/4", PAPER.replace(rank=0.25)),
    "paper-fused": vrwkv("paper, fused r/k/v", PAPER.replace(fused_rkv=True)),
    "paper-mid": vrwkv("paper, mid block only", PAPER.replace(placement="mid")),
    "paper-skip": vrwkv("paper, skip blocks only", PAPER.replace(placement="skip")),
    "paper-half": vrwkv("paper, half resolution and below", PAPER.replace(min_level=1)),
    "paper-mu-off": vrwkv("paper, temporal mix off (mu = 1)", PAPER, freeze_mu=True),
    "paper-decay-frame": vrwkv("paper, decay scaled per frame", PAPER, decay_scaling="frame"),
    "paper-blocks-x1": vrwkv("paper, blocks at 1x the lr", PAPER, block_lr_multiplier=1.0),
    "paper-temporal-x1": vrwkv("paper, temporal parameters at 1x the lr", PAPER, temporal_lr_multiplier=1.0),
    "paper-sc": vrwkv("paper, frames read the first and previous frame", PAPER.replace(frame_attention="first+previous")),
    "default-edit03": vrwkv("the defaults, blocks in the first 30% of sampling in edits",
                            DEFAULT.replace(edit_end_percent=0.3)),
    "default-edit05": vrwkv("the defaults, blocks in the first half of sampling in edits too",
                            DEFAULT.replace(edit_end_percent=None)),
    "default-zero": vrwkv("the defaults, zero before frame 0 and blocks in the first half of sampling in edits too",
                          DEFAULT.replace(channel_mix_pad="zero", edit_end_percent=None)),
    "default-end03": vrwkv("the defaults, zero before frame 0, blocks in the first 30% of sampling",
                           DEFAULT.replace(channel_mix_pad="zero", end_percent=0.3, edit_end_percent=None)),
    "default-cmrep": vrwkv("the defaults, channel mix repeating frame 0 before it, blocks in the first half of "
                           "sampling in edits", DEFAULT.replace(channel_mix_pad="repeat", edit_end_percent=None)),
    "default-cm1-low": vrwkv("the defaults with the lean block and a 1x channel mix at levels 0-1",
                             CONFIGS["default-cm1-low"]),
    "default-mid": vrwkv("the defaults with the blocks in the mid block only", CONFIGS["default-mid"]),
    "lean-cm4": vrwkv("lean, channel mix 4x", LEAN.replace(channel_mix=4)),
    "lean-cm1": vrwkv("lean, channel mix 1x", CONFIGS["lean-cm1"]),
    "lean-cm1-low": vrwkv("lean, channel mix 1x at levels 0-1", CONFIGS["lean-cm1-low"]),
    "lean-full": vrwkv("lean, full rank", LEAN.replace(rank=None)),
    "lean-unfused": vrwkv("lean, unfused r/k/v", LEAN.replace(fused_rkv=False)),
    "lean-mid": vrwkv("lean, mid block only", LEAN.replace(placement="mid")),
    "lean-skip": vrwkv("lean, skip blocks only", LEAN.replace(placement="skip")),
    "lean-half": vrwkv("lean, half resolution and below", LEAN.replace(min_level=1)),
    "lean-temporal-x20": vrwkv("lean, temporal parameters at the blocks' 20x", LEAN, temporal_lr_multiplier=20.0),
    "lean-mu-off": vrwkv("lean, temporal mix off (mu = 1)", LEAN, freeze_mu=True),
    "lean-decay-frame": vrwkv("lean, decay scaled per frame", LEAN, decay_scaling="frame"),
}


def method(spec: str) -> Method:
    """A method by name, "name" or "name@lr"."""
    name, _, lr = spec.partition("@")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)} (optionally @<lr>)")
    m = METHODS[name]
    if not lr:
        return m
    if m.kind == "plain":
        raise ValueError(f"{name} is not tuned: it takes no learning rate")
    return replace(m, name=f"{m.name}, lr {float(lr):g}", lr=float(lr))
