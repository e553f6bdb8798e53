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


OWN_FRAME = {"frame_attention": "own frame (SD)"}
PAPER_BLOCK_MERGED = {"channel_mix": "4x (paper)", "projections": "full", "fused_rkv": False, "skip_fusion": "merge",
                      **OWN_FRAME}


@pytest.mark.parametrize("options", [OWN_FRAME, PAPER_BLOCK_MERGED], ids=["default blocks", "paper block, merge"])
def test_patched_model_samples_exactly_like_the_original_at_init(comfy_server, options):
    """With SD's own per-frame attention, the blocks at init are an exact identity."""
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all", **options}}
    name = "paper" if "skip_fusion" in options else "default"
    sample_and_save(graph, "plain", ["ckpt", 0], f"init_plain_{name}")
    sample_and_save(graph, "patched", ["patch", 0], f"init_patched_{name}")
    comfy_server.run(graph, timeout=900)
    plain, patched = latent(comfy_server, f"init_plain_{name}"), latent(comfy_server, f"init_patched_{name}")
    assert plain.shape == (8, 4, 8, 8) and torch.isfinite(plain).all()
    assert torch.equal(plain, patched)
    assert "VRWKV: 5 blocks" in comfy_server.log_text()          # parameter count printed


def test_cross_frame_attention_changes_every_frame_but_the_first_at_init(comfy_server):
    """The default frame attention: frame 0 reads only itself (its keys twice: the same
    attention up to rounding), so it samples as in the original model; every later frame
    also reads frame 0 and its previous frame."""
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel", "inputs": {
        "model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all", "frame_attention": "first and previous frame"}}
    sample_and_save(graph, "plain", ["ckpt", 0], "cross_plain")
    sample_and_save(graph, "patched", ["patch", 0], "cross_patched")
    comfy_server.run(graph, timeout=900)
    plain, patched = latent(comfy_server, "cross_plain"), latent(comfy_server, "cross_patched")
    assert torch.allclose(plain[0], patched[0], atol=1e-4)
    assert all(not torch.allclose(plain[i], patched[i], atol=1e-2) for i in range(1, 8))


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
    # pretrained weights at the recipe's lr (1e-3 here): AdamW moves them <= ~lr per step, where
    # the new blocks' lr x BLOCK_LR_MULTIPLIER would move them ten times as far
    assert max(d.abs().max().item() for d in base.values()) <= 2 * 1e-3 * 1.5
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


def weights_path(history, node):
    """The file a node reports it wrote (Tune On Video, Save Weights)."""
    [path] = history["outputs"][node]["text"]
    return path


def test_retuned_model_saves_a_file_that_reproduces_it(comfy_server):
    """A MODEL loaded with tuned query differences (base.*) and tuned again saves the sum of
    both runs' differences, so reloading the file samples like the MODEL it was saved from,
    whether the second run tunes the queries again (vrwkv+attn_q) or only the blocks (vrwkv)."""
    from vrwkv_editor.vrwkv.weights import load_weights
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    graph["tune"] = tune_node(["patch", 0], steps=2, save_name="it_chain_first", trainable="vrwkv+attn_q")
    first = weights_path(comfy_server.run(graph, timeout=900), "tune")

    graph = clip_graph()
    graph["load"] = {"class_type": "VRWKVLoadWeights", "inputs": {"model": ["ckpt", 0], "weights": "it_chain_first.safetensors"}}
    for trainable in ("vrwkv+attn_q", "vrwkv"):
        key = trainable.replace("+", "_")
        graph[f"tune_{key}"] = tune_node(["load", 0], steps=2, save_name=f"it_chain_{key}", trainable=trainable)
        sample_and_save(graph, f"tuned_{key}", [f"tune_{key}", 0], f"chain_tuned_{key}")
    history = comfy_server.run(graph, timeout=900)
    saved = {key: weights_path(history, f"tune_{key}") for key in ("vrwkv_attn_q", "vrwkv")}

    graph = clip_graph()
    for key, path in saved.items():
        graph[f"load_{key}"] = {"class_type": "VRWKVLoadWeights",
                                "inputs": {"model": ["ckpt", 0], "weights": path.rsplit("/", 1)[-1]}}
        sample_and_save(graph, f"reloaded_{key}", [f"load_{key}", 0], f"chain_reloaded_{key}")
    comfy_server.run(graph, timeout=900)
    for key in saved:
        tuned, reloaded = latent(comfy_server, f"chain_tuned_{key}"), latent(comfy_server, f"chain_reloaded_{key}")
        # The tuned MODEL adds the two differences one after the other, the file's patch their
        # sum: float32 rounding apart the same weights, and after 3 sampling steps the same
        # latents to 1e-5 of their largest value (measured 6.9e-5 with values up to 38).
        difference = (reloaded - tuned).abs().max() / tuned.abs().max()
        print(f"\n{key}: reloaded vs tuned max |difference| / max |latent| = {difference:.2e}")
        assert difference < 1e-5, (key, difference)
    earlier = load_weights(first)[2]
    for key, path in saved.items():
        base = load_weights(path)[2]
        assert base.keys() == earlier.keys()
        if key == "vrwkv":
            assert all(torch.equal(base[k], earlier[k]) for k in base)
        else:
            assert all(not torch.equal(base[k], earlier[k]) for k in base)


def test_training_dtype_is_the_dtype_the_unet_computes_in(comfy_server):
    """On a MODEL that computes in float16 (core ModelComputeDtype), every training_dtype
    choice is what the UNet computes in while tuning (the dtype of its mid-block output,
    recorded in the file): float32 (and auto on the CPU) in float32, bfloat16 in bfloat16,
    with the query projections tuned through their float32 projection."""
    from vrwkv_editor.vrwkv.weights import load_weights
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "mid", "resolution": "all"}}
    graph["half"] = {"class_type": "ModelComputeDtype", "inputs": {"model": ["patch", 0], "dtype": "fp16"}}
    for choice in ("float32", "auto", "bfloat16"):
        graph[f"tune_{choice}"] = tune_node(["half", 0], steps=1, save_name=f"it_dtype_{choice}",
                                            trainable="vrwkv+attn_q")
        graph[f"tune_{choice}"]["inputs"]["training_dtype"] = choice
    history = comfy_server.run(graph, timeout=900)
    computed = {choice: load_weights(weights_path(history, f"tune_{choice}"))[3]["unet_compute_dtype"]
                for choice in ("float32", "auto", "bfloat16")}
    assert computed == {"float32": "float32", "auto": "float32", "bfloat16": "bfloat16"}


def test_v_prediction_models_are_refused_before_any_step(comfy_server):
    """Tuning trains noise prediction: a v-prediction MODEL is refused with the DDIM nodes'
    message before a step runs."""
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "mid", "resolution": "all"}}
    graph["vpred"] = {"class_type": "ModelSamplingDiscrete",
                      "inputs": {"model": ["patch", 0], "sampling": "v_prediction", "zsnr": False}}
    message = r"needs a noise-predicting model with discrete timesteps.*v-prediction is not supported.*V_PREDICTION"
    graph["tune"] = tune_node(["vpred", 0], steps=2)
    seen = len(comfy_server.log_text())
    with pytest.raises(RuntimeError, match="VRWKV Tune On Video " + message):
        comfy_server.run(graph, timeout=300)
    assert "VRWKV tuning: step" not in comfy_server.log_text()[seen:]
    del graph["tune"]
    graph["invert"] = {"class_type": "VRWKVDDIMInversion", "inputs": {
        "model": ["vpred", 0], "latent": ["latent", 0], "positive": ["pos", 0], "steps": 2, "cfg": 1.0,
        "refine": 0, "mode": "invert", "save_name": "unused"}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["invert", 0], "filename_prefix": "latents/never"}}
    with pytest.raises(RuntimeError, match="VRWKV DDIM " + message):
        comfy_server.run(graph, timeout=300)


def test_saving_under_a_taken_name_writes_a_new_file(comfy_server):
    """Tune On Video and Save Weights never replace a file: a taken name gets the next free
    counter and each node reports the file it wrote."""
    folder = comfy_server.base_dir / "models" / "vrwkv"
    graph = clip_graph()
    graph["patch"] = {"class_type": "VRWKVPatchModel",
                      "inputs": {"model": ["ckpt", 0], "placement": "mid", "resolution": "all"}}
    graph["tune"] = tune_node(["patch", 0], steps=1, save_name="it_same")
    first = weights_path(comfy_server.run(graph, timeout=600), "tune")
    assert first == str(folder / "it_same.safetensors")
    content = (folder / "it_same.safetensors").read_bytes()

    graph["tune"]["inputs"]["seed"] = 2
    graph["save"] = {"class_type": "VRWKVSaveWeights", "inputs": {"model": ["tune", 0], "name": "it_same"}}
    history = comfy_server.run(graph, timeout=600)
    written = {weights_path(history, "tune"), weights_path(history, "save")}
    assert written == {str(folder / "it_same_00001.safetensors"), str(folder / "it_same_00002.safetensors")}
    assert (folder / "it_same.safetensors").read_bytes() == content
