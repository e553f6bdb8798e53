"""Block configurations the benchmarks compare by name (bench/pipeline_cost.py's cost,
bench/quality/methods.py's quality): the pack's own (vrwkv/config.py) and cheaper variants."""

from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv.config import DEFAULT, LEAN, PAPER

CONFIGS = {
    "default": DEFAULT,
    "paper": PAPER,
    "lean": LEAN,
    "lean-cm1": LEAN.replace(channel_mix=1),
    "lean-cm1-low": LEAN.replace(channel_mix=1, channel_mix_max_level=1),   # where channels are fewest
    # the defaults' sampling (cross-frame attention, blocks to 50% / 20% of edits) with cheaper blocks
    "default-mid": DEFAULT.replace(placement="mid"),
    "default-cm1-low": DEFAULT.replace(channel_mix=1, channel_mix_max_level=1, rank=0.25, fused_rkv=True),
}
