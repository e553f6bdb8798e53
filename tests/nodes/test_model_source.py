"""The checkpoint a MODEL input comes from, read from the prompt (nodes/fingerprint.py):
the loader upstream along MODEL inputs, with the LoRAs on the way in the order applied."""

from vrwkv_editor.nodes.fingerprint import model_source


def prompt(*chain):
    """API-format nodes "0".."n", each taking the MODEL of the one before."""
    nodes = {}
    for i, (kind, inputs) in enumerate(chain):
        nodes[str(i)] = {"class_type": kind, "inputs": {**inputs, **({"model": [str(i - 1), 0]} if i else {})}}
    return nodes


def test_checkpoint_and_loras_in_the_order_applied():
    p = prompt(("CheckpointLoaderSimple", {"ckpt_name": "v1-5.safetensors"}),
               ("LoraLoaderModelOnly", {"lora_name": "a.safetensors", "strength_model": 0.8}),
               ("ModelSamplingDiscrete", {"sampling": "eps"}),
               ("LoraLoaderModelOnly", {"lora_name": "b.safetensors", "strength_model": 1.0}),
               ("VRWKVLoadWeights", {"weights": "clip.safetensors"}))
    assert model_source(p, "4") == "v1-5.safetensors + LoRA a.safetensors (0.8) + LoRA b.safetensors (1)"
    assert model_source(p, "1") == "v1-5.safetensors"
    p["4"]["inputs"]["model"] = ["0", 0]
    assert model_source(p, "4") == "v1-5.safetensors"


def test_unknown_where_the_prompt_does_not_show_it():
    p = prompt(("SomeCustomLoader", {"path": "x"}), ("VRWKVPatchModel", {}))
    assert model_source(p, "1") is None
    assert model_source(None, "1") is None and model_source(p, None) is None
    p = prompt(("UNETLoader", {"unet_name": ["9", 0]}), ("VRWKVPatchModel", {}))     # name from another node
    assert model_source(p, "1") is None
    p = prompt(("A", {}), ("B", {}))
    p["0"]["inputs"]["model"] = ["1", 0]                                              # a loop ends the search
    assert model_source(p, "1") is None
