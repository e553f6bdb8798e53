"""Node schemas (checked without ComfyUI): every input has a tooltip, every output a
tooltip, contract ids are present, and the pack's own checks reject non-SD1.5 models."""

from types import SimpleNamespace

import pytest

import vrwkv_editor
from vrwkv_editor.nodes.common import require_sd15

CONTRACT_IDS = {"VRWKVPatchModel", "VRWKVTuneOnVideo", "VRWKVDDIMInversion", "VRWKVKSampler", "VRWKVSamplerDDIM",
                "VRWKVSaveWeights", "VRWKVLoadWeights", "VRWKVVideoCoherence"}
NODES = sorted(vrwkv_editor.NODE_CLASS_MAPPINGS.items())


def test_contract_ids_and_display_names():
    assert CONTRACT_IDS <= set(vrwkv_editor.NODE_CLASS_MAPPINGS)
    assert set(vrwkv_editor.NODE_DISPLAY_NAME_MAPPINGS) == set(vrwkv_editor.NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("node_id,cls", NODES, ids=[n for n, _ in NODES])
def test_schema_is_complete(node_id, cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
    assert cls.CATEGORY.startswith("VRWKV-Editor") and cls.DESCRIPTION
    assert callable(getattr(cls, cls.FUNCTION))


def fake_model(**unet_config):
    config = {"context_dim": 768, "model_channels": 320, "in_channels": 4, "adm_in_channels": None,
              "use_temporal_attention": False, **unet_config}
    return SimpleNamespace(model=SimpleNamespace(model_config=SimpleNamespace(unet_config=config)))


def test_sd15_check():
    require_sd15(fake_model(), "node")
    with pytest.raises(ValueError, match=r"needs an SD1.5 model.*context_dim=2048, adm_in_channels=2816"):
        require_sd15(fake_model(context_dim=2048, adm_in_channels=2816), "node")     # SDXL
    with pytest.raises(ValueError, match="context_dim=1024"):
        require_sd15(fake_model(context_dim=1024), "node")                           # SD2
    with pytest.raises(ValueError, match="not a diffusion MODEL"):
        require_sd15(SimpleNamespace(), "node")


def test_patch_model_widget_defaults_build_the_default_config():
    from vrwkv_editor.nodes.patch_model import VRWKVPatchModel, widget_config
    from vrwkv_editor.vrwkv.config import DEFAULT
    spec = VRWKVPatchModel.INPUT_TYPES()
    widgets = {name: entry[1]["default"] for section in ("required", "optional")
               for name, entry in spec[section].items() if name not in ("model", "weights")}
    assert widget_config(**widgets) == DEFAULT
