"""The methods the quality benchmark compares, by name; "name@lr" (e.g. "tav@1e-3") runs one at
that learning rate instead of its recipe's (for VRWKV the tune node's `learning_rate`, which
the blocks' multipliers scale)."""

from dataclasses import replace

from toyworld.pipeline import Method
from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv.config import DEFAULT, PAPER  # noqa: E402

RECIPE_LR = 3e-5      # Tune-A-Video's recipe and VRWKV Tune On Video's default learning rate


def vrwkv(name: str, config=DEFAULT, **options) -> Method:
    return Method(name, "vrwkv", lr=RECIPE_LR, config=config, **options)


METHODS = {m_name: m for m_name, m in {
    "untuned": Method("per-frame (no tuning)", "plain"),
    "tav": Method("Tune-A-Video", "tav", lr=RECIPE_LR),
    "default": vrwkv("VRWKV, the node's default"),
    "paper": vrwkv("VRWKV, the paper's block", PAPER),
    # one lean option at a time on the paper's block, and the reverse
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
    "default-cm4": vrwkv("default, channel mix 4x", DEFAULT.replace(channel_mix=4)),
    "default-cm1": vrwkv("default, channel mix 1x", DEFAULT.replace(channel_mix=1)),
    "default-full": vrwkv("default, full rank", DEFAULT.replace(rank=None)),
    "default-unfused": vrwkv("default, unfused r/k/v", DEFAULT.replace(fused_rkv=False)),
    "default-mid": vrwkv("default, mid block only", DEFAULT.replace(placement="mid")),
    "default-skip": vrwkv("default, skip blocks only", DEFAULT.replace(placement="skip")),
    "default-half": vrwkv("default, half resolution and below", DEFAULT.replace(min_level=1)),
    "default-temporal-x20": vrwkv("default, temporal parameters at the blocks' 20x", temporal_lr_multiplier=20.0),
    "default-mu-off": vrwkv("default, temporal mix off (mu = 1)", freeze_mu=True),
    "default-decay-frame": vrwkv("default, decay scaled per frame", decay_scaling="frame"),
}.items()}


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
