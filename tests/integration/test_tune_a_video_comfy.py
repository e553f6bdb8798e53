"""The Tune-A-Video baseline (baselines/tune_a_video.py) on ComfyUI's real SD1.5 UNetModel."""

import json
from pathlib import Path

from comfy_server import run_comfy_python

CHECK = Path(__file__).resolve().parent / "tune_a_video_check.py"


def test_tune_a_video_patches_every_transformer_block_samples_and_tunes():
    r = json.loads(run_comfy_python([CHECK], timeout=1800).strip().splitlines()[-1])
    assert r["transformer_blocks"] == len(r["keys"]) == r["attn1_replaced"] == 16     # full SD1.5 topology
    assert r["called"] == r["keys"]          # the UNet calls each patch under the key it was registered with
    for kind, queries, keys in r["attention_shapes"]:
        if kind == "sparse-causal":
            assert keys == 2 * queries       # the tokens of two frames per query frame
        else:
            assert queries == keys == 4      # across the 4 frames at one position
    assert {k for k, _, _ in r["attention_shapes"]} == {"sparse-causal", "temporal"}
    assert r["finite"] and r["shape"] == [4, 4, 8, 8]
    assert len(r["losses"]) == 2 and all(0 < loss < 10 for loss in r["losses"])
    assert r["params"] == 16 * 2 + 16 * 5 and r["moved"] == r["params"]     # to_q deltas + attn_temp q/k/v/out
