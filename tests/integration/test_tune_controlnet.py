"""VRWKV Tune On Video with a tuning window on a source prompt that carries a ControlNet (a
random SD1.5 ControlNet, tools/make_random_controlnet.py) applied with the clip's frames as
its hint, in a real ComfyUI server."""

import json

from safetensors import safe_open

from harness import CONTROLNET_NAME, clip_graph


def test_tuning_with_a_window_and_a_controlnet_on_the_source_prompt(comfy_server):
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    graph["cnet"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET_NAME}}
    graph["control"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cnet", 0], "image": ["frames", 0],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    graph["tune"] = {"class_type": "VRWKVTuneOnVideo", "inputs": {
        "model": ["patch", 0], "latent": ["latent", 0], "conditioning": ["control", 0], "steps": 3,
        "learning_rate": 1e-3, "seed": 1, "trainable": "vrwkv", "gradient_checkpointing": True,
        "training_dtype": "auto", "save_name": "it_controlnet", "note": "", "window": 4}}
    history = comfy_server.run(graph, timeout=900)
    [path] = history["outputs"]["tune"]["text"]
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    info, layout = json.loads(meta["info"]), json.loads(meta["layout"])
    assert info["steps_done"] == 3 and info["window"] == 4 and layout["norm_frames"] == 4
    assert "missing controlnet keys" not in comfy_server.log_text()
