"""The DDIM nodes' schemas (no ComfyUI needed) and the conditioning batch check."""

import pytest
import torch

import vrwkv_editor
from vrwkv_editor.nodes import ddim
from vrwkv_editor.nodes.comfy_helpers import check_conditioning_batch

DDIM_NODES = {"VRWKVSamplerDDIM": ddim.VRWKVSamplerDDIM, "VRWKVKSampler": ddim.VRWKVKSampler,
              "VRWKVDDIMInversion": ddim.VRWKVDDIMInversion}


def test_registered_under_contract_ids():
    for node_id, cls in DDIM_NODES.items():
        assert vrwkv_editor.NODE_CLASS_MAPPINGS[node_id] is cls
        assert vrwkv_editor.NODE_DISPLAY_NAME_MAPPINGS[node_id]


@pytest.mark.parametrize("node_id", sorted(DDIM_NODES))
def test_every_input_has_a_tooltip_and_every_output_one(node_id):
    cls = DDIM_NODES[node_id]
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    assert inputs
    for name, (_, options) in inputs.items():
        assert options.get("tooltip", "").strip(), f"{node_id}.{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(t.strip() for t in cls.OUTPUT_TOOLTIPS)
    assert cls.CATEGORY == "VRWKV-Editor/sampling" and cls.DESCRIPTION
    assert callable(getattr(cls, cls.FUNCTION))


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
