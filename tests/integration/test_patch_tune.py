"""VRWKV Patch Model, Tune On Video and Save/Load Weights in a real ComfyUI server, on a
random-weight SD1.5 checkpoint and an 8-frame 64x64 clip."""

import json
import time

import pytest
import torch
from safetensors import safe_open

from harness import clip_graph, read_latent as latent, sample_and_save

OUR_NODES = ("VRWKVPatchModel", "VRWKVTuneOnVideo", "VRWKVSaveWeights", "VRWKVLoadWeights")


def tune_node(model, steps, save_name="", trainable="vrwkv"):
    return {"class_type": "VRWKVTuneOnVideo", "inputs": {
        "model": model, "latent": ["latent", 0], "conditioning": ["pos", 0], "steps": steps,
        "learning_rate": 1e-3, "seed": 1, "trainable": trainable, "gradient_checkpointing": True,
        "training_dtype": "auto", "save_name": save_name, "note": "a man skiing"}}


def test_nodes_are_registered_with_tooltips(comfy_server):
    for node_id in OUR_NODES:
        info = comfy_server.object_info(node_id)[node_id]
        assert info["category"].startswith("VRWKV-Editor")
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name}"


def test_patched_model_samples_exactly_like_the_original_at_init(comfy_server):
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    sample_and_save(graph, "plain", ["ckpt", 0], "init_plain")
    sample_and_save(graph, "patched", ["patch", 0], "init_patched")
    comfy_server.run(graph, timeout=900)
    plain, patched = latent(comfy_server, "init_plain"), latent(comfy_server, "init_patched")
    assert plain.shape == (8, 4, 8, 8) and torch.isfinite(plain).all()
    assert torch.equal(plain, patched)
    assert "VRWKV: 5 blocks" in comfy_server.log_text()          # parameter count printed


def test_tune_sample_save_and_reload(comfy_server):
    """Tuning changes the samples, leaves the input MODEL's samples as they were, and the
    saved weights reload (VRWKV Load Weights) into a model that samples exactly like the
    tuned one."""
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    sample_and_save(graph, "before", ["patch", 0], "tune_before")
    comfy_server.run(graph, timeout=900)

    graph["tune"] = tune_node(["patch", 0], steps=3, save_name="it_tuned")
    sample_and_save(graph, "tuned", ["tune", 0], "tune_tuned")
    sample_and_save(graph, "after", ["patch", 0], "tune_after", after="ks_tuned")
    history = comfy_server.run(graph, timeout=900)
    before, after, tuned = (latent(comfy_server, p) for p in ("tune_before", "tune_after", "tune_tuned"))
    assert torch.equal(before, after)                  # the input MODEL is untouched
    assert not torch.allclose(before, tuned)
    path = comfy_server.base_dir / "models" / "vrwkv" / "it_tuned.safetensors"
    assert history["outputs"]["tune"]["text"] == [str(path)]
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["info"])
    assert info["steps_done"] == 3 and info["frames"] == 8 and info["note"] == "a man skiing"

    graph = clip_graph()
    graph["load"] = {"class_type": "VRWKVLoadWeights", "inputs": {"model": ["ckpt", 0], "weights": "it_tuned.safetensors"}}
    sample_and_save(graph, "reloaded", ["load", 0], "tune_reloaded")
    comfy_server.run(graph, timeout=900)
    assert torch.equal(latent(comfy_server, "tune_reloaded"), tuned)


def test_tuning_query_projections_reaches_only_the_output_model(comfy_server):
    """trainable vrwkv+attn_q: the tuned query projections go into the file as differences and
    into the output MODEL as weight patches (a file without them samples differently); the
    checkpoint's own MODEL samples afterwards exactly as before."""
    from vrwkv_editor.vrwkv.weights import load_weights, save_weights
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    sample_and_save(graph, "q_before", ["ckpt", 0], "q_before")
    comfy_server.run(graph, timeout=900)
    graph["tune"] = tune_node(["patch", 0], steps=2, save_name="it_attn_q", trainable="vrwkv+attn_q")
    sample_and_save(graph, "q_tuned", ["tune", 0], "q_tuned")
    sample_and_save(graph, "q_after", ["ckpt", 0], "q_after", after="ks_q_tuned")
    comfy_server.run(graph, timeout=900)
    tuned = latent(comfy_server, "q_tuned")
    assert torch.equal(latent(comfy_server, "q_before"), latent(comfy_server, "q_after"))

    folder = comfy_server.base_dir / "models" / "vrwkv"
    spec, blocks, base, info = load_weights(folder / "it_attn_q.safetensors")
    assert info["trainable"] == "vrwkv+attn_q" and info["steps_done"] == 2
    assert {k.rsplit(".", 2)[-2] for k in base} == {"to_q"}
    assert any(".attn1." in k for k in base) and any(".attn2." in k for k in base)
    assert all(d.abs().max() > 0 for d in base.values())
    save_weights(folder / "it_attn_q_blocks_only.safetensors", blocks, spec, None, info)

    graph = clip_graph()
    for name in ("it_attn_q", "it_attn_q_blocks_only"):
        graph[f"load_{name}"] = {"class_type": "VRWKVLoadWeights",
                                 "inputs": {"model": ["ckpt", 0], "weights": f"{name}.safetensors"}}
        sample_and_save(graph, name, [f"load_{name}", 0], name)
    comfy_server.run(graph, timeout=900)
    assert torch.equal(latent(comfy_server, "it_attn_q"), tuned)
    assert not torch.allclose(latent(comfy_server, "it_attn_q_blocks_only"), tuned)


def test_cancel_keeps_and_saves_the_completed_steps(comfy_server):
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    graph["tune"] = tune_node(["patch", 0], steps=250, save_name="it_cancelled")
    path = comfy_server.base_dir / "models" / "vrwkv" / "it_cancelled.safetensors"
    seen = len(comfy_server.log_text())
    prompt_id = comfy_server.queue(graph)
    deadline = time.time() + 600
    while "VRWKV tuning: step" not in comfy_server.log_text()[seen:]:     # wait until steps are running
        assert time.time() < deadline, comfy_server.log_text()[-3000:]
        time.sleep(0.5)
    t0 = time.time()
    comfy_server.interrupt()
    with pytest.raises(RuntimeError, match="[Ii]nterrupt"):
        comfy_server.wait(prompt_id, timeout=300)
    assert time.time() - t0 < 60
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["info"])
    assert 10 <= info["steps_done"] < 250


def test_tuning_on_an_empty_latent_says_what_to_connect(comfy_server):
    graph = clip_graph()
    graph["empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 8}}
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "mid", "resolution": "all"}}
    graph["tune"] = tune_node(["patch", 0], steps=2)
    graph["tune"]["inputs"]["latent"] = ["empty", 0]
    with pytest.raises(RuntimeError, match="all zeros.*connect the VAE Encode output"):
        comfy_server.run(graph, timeout=300)
