"""The DDIM nodes' defaults (no ComfyUI needed) and the conditioning batch check; tooltips
of every node are checked in test_node_schemas.py."""

import pytest
import torch

from vrwkv_editor.nodes import ddim
from vrwkv_editor.nodes.common import check_conditioning_batch


def test_ksampler_has_core_ksampler_inputs_and_tune_a_video_defaults():
    spec = ddim.VRWKVKSampler.INPUT_TYPES()
    assert {"model", "seed", "steps", "cfg", "positive", "negative", "latent_image", "denoise", "eta"} == set(spec["required"])
    assert set(spec["optional"]) == {"inverted_latent"}
    assert spec["required"]["steps"][1]["default"] == 50 and spec["required"]["cfg"][1]["default"] == 12.5
    inv = ddim.VRWKVDDIMInversion.INPUT_TYPES()["required"]
    assert inv["steps"][1]["default"] == 50 and inv["cfg"][1]["default"] == 1.0


def cond(*batches):
    return [[torch.zeros(b, 77, 768), {}] for b in batches]


def test_conditioning_batch_one_or_one_per_frame():
    check_conditioning_batch(cond(1), 8, "positive")
    check_conditioning_batch(cond(8, 1), 8, "positive")
    with pytest.raises(ValueError, match=r"positive conditioning has a batch of 3 prompts but the latent has 8 "
                                         r"frames.*batch 1.*batch 8"):
        check_conditioning_batch(cond(1, 3), 8, "positive")
