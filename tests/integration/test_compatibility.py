"""The pack with what users combine it with, in a real ComfyUI on the random SD1.5 and the
8-frame 64x64 clip: a LoRA applied before the patch, a ControlNet on the video batch (with
and without VRWKV Context Windows), another node's UNet function wrapper set before or after
the windows, and the weights' record of the model they were tuned on."""

import json

import pytest
import torch
from safetensors import safe_open

from harness import (CHECKPOINTS, cached_checkpoint, cached_controlnet, clip_graph, make_random_lora, read_latent,
                     sample_and_save)
from test_patch_tune import tune_node

LORA, CONTROLNET = "it_lora.safetensors", "it_controlnet.safetensors"
CHECKPOINT = CHECKPOINTS["shallow"]


def patch(model, **options):
    return {"class_type": "VRWKVPatchModel",
            "inputs": {"model": model, "placement": "skip+mid", "resolution": "all", **options}}


def windows(model, window=4, overlap=0, carry=False):
    return {"class_type": "VRWKVContextWindows",
            "inputs": {"model": model, "window": window, "overlap": overlap, "carry": carry}}


def load_weights(model, name):
    return {"class_type": "VRWKVLoadWeights", "inputs": {"model": model, "weights": name}}


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def lora(comfy_server):
    return make_random_lora(cached_checkpoint("shallow"), comfy_server.base_dir / "models" / "loras" / LORA)


def test_lora_before_the_patch_is_part_of_the_tuned_model(comfy_server, lora):
    """LoraLoaderModelOnly before VRWKV Patch Model: the LoRA shows in the tuned model's
    samples, the file records the LoRA'd model as its base (fingerprint and names), and the
    file reloads onto the LoRA'd model exactly and silently; onto the checkpoint alone it
    loads with a warning naming both models."""
    g = clip_graph()
    g["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["ckpt", 0], "lora_name": LORA,
                                                                 "strength_model": 1.0}}
    for key, model in (("plain", ["ckpt", 0]), ("lora", ["lora", 0])):
        g[f"patch_{key}"] = patch(model)
        g[f"tune_{key}"] = tune_node([f"patch_{key}", 0], steps=2, save_name=f"it_base_{key}")
        sample_and_save(g, key, [f"tune_{key}", 0], f"compat_tuned_{key}")
    history = comfy_server.run(g, timeout=900)
    plain, lora_tuned = read_latent(comfy_server, "compat_tuned_plain"), read_latent(comfy_server, "compat_tuned_lora")
    assert torch.isfinite(lora_tuned).all() and rel(lora_tuned, plain) > 0.05
    bases = {}
    for key in ("plain", "lora"):
        [path] = history["outputs"][f"tune_{key}"]["text"]
        with safe_open(path, framework="pt") as f:
            bases[key] = json.loads(f.metadata()["info"])["base"]
    assert bases["plain"]["checkpoint"] == CHECKPOINT
    assert bases["lora"]["checkpoint"] == f"{CHECKPOINT} + LoRA {LORA} (1)"
    assert len(bases["lora"]["fingerprint"]) == 16 and bases["lora"]["fingerprint"] != bases["plain"]["fingerprint"]

    g = clip_graph()
    g["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["ckpt", 0], "lora_name": LORA,
                                                                 "strength_model": 1.0}}
    g["onto_lora"] = load_weights(["lora", 0], "it_base_lora.safetensors")
    g["onto_plain"] = load_weights(["ckpt", 0], "it_base_lora.safetensors")
    sample_and_save(g, "reloaded", ["onto_lora", 0], "compat_reloaded_lora")
    sample_and_save(g, "elsewhere", ["onto_plain", 0], "compat_elsewhere")
    seen = len(comfy_server.log_text())
    outputs = comfy_server.run(g, timeout=900)["outputs"]
    assert torch.equal(read_latent(comfy_server, "compat_reloaded_lora"), lora_tuned)
    assert "onto_lora" not in outputs
    [warning] = outputs["onto_plain"]["text"]
    for part in ("it_base_lora.safetensors was tuned on another model", bases["lora"]["fingerprint"],
                 bases["plain"]["fingerprint"], f"LoRA {LORA}", CHECKPOINT):
        assert part in warning, part
    assert warning in comfy_server.log_text()[seen:]
    assert torch.isfinite(read_latent(comfy_server, "compat_elsewhere")).all()


def test_files_without_a_base_load_silently_and_layout_errors_stay(comfy_server):
    """A file saved before fingerprints (no base in its record) loads as before; a file whose
    layout does not fit the UNet keeps its error, with no base warning first."""
    from vrwkv_editor.vrwkv.weights import load_weights as read, save_weights
    g = clip_graph()
    g["patch"] = patch(["ckpt", 0])
    g["tune"] = tune_node(["patch", 0], steps=1, save_name="it_base_source")
    [path] = comfy_server.run(g, timeout=900)["outputs"]["tune"]["text"]
    spec, state, deltas, info = read(path)
    folder = comfy_server.base_dir / "models" / "vrwkv"
    info.pop("base")
    save_weights(folder / "it_base_none.safetensors", state, spec, deltas, info)
    wrong = {**spec, "blocks": {**spec["blocks"], "mid": {**spec["blocks"]["mid"], "channels": 320}}}
    save_weights(folder / "it_base_wrong_layout.safetensors", state, wrong, deltas, info)

    g = clip_graph()
    g["load"] = load_weights(["ckpt", 0], "it_base_none.safetensors")
    sample_and_save(g, "none", ["load", 0], "compat_base_none")
    assert "load" not in comfy_server.run(g, timeout=900)["outputs"]
    g["load"]["inputs"]["weights"] = "it_base_wrong_layout.safetensors"
    with pytest.raises(RuntimeError, match="block 'mid' of the weights .* does not fit this UNet"):
        comfy_server.run(g, timeout=900)


@pytest.fixture(scope="module")
def controlnet(comfy_server):
    path = comfy_server.base_dir / "models" / "controlnet" / CONTROLNET
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(cached_controlnet("shallow"))
    return path


def with_controlnet(g, key, strength=0.5):
    """Core ControlNetApplyAdvanced on the prompts, the clip's own frames as the hint (one per frame)."""
    g["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
    g[f"cn_apply_{key}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["frames", 0],
        "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
    g[f"ks_{key}"]["inputs"].update(positive=[f"cn_apply_{key}", 0], negative=[f"cn_apply_{key}", 1])


def test_controlnet_on_the_video_batch_with_and_without_context_windows(comfy_server, controlnet):
    """A ControlNet (hint: the clip's frames) changes the samples of the patched model. In
    windows each window gets its own frames' ControlNet residuals: on the patched model before
    tuning (its blocks an identity, so windowing alone changes nothing) windowed and whole
    samples agree (cross-frame attention included: each window reads the clip's first frame
    and the frame before it), which they would not if windows got other frames' hints. The
    tuned model samples with ControlNet in windows with carry too (its blocks through all of
    sampling, where the carried states make windows differ from the whole clip)."""
    g = clip_graph()
    g["patch"] = patch(["ckpt", 0], end_percent=1.0)
    g["windowed"] = windows(["patch", 0])
    g["tune"] = tune_node(["patch", 0], steps=2)
    g["tuned_windowed"] = windows(["tune", 0], window=4, overlap=2, carry=True)
    for key, model in (("nocn", ["patch", 0]), ("cn", ["patch", 0]), ("cn_windowed", ["windowed", 0]),
                       ("tuned_cn", ["tune", 0]), ("tuned_cn_windowed", ["tuned_windowed", 0])):
        sample_and_save(g, key, model, f"compat_{key}")
        if key != "nocn":
            with_controlnet(g, key)
    comfy_server.run(g, timeout=1200)
    out = {k: read_latent(comfy_server, f"compat_{k}")
           for k in ("nocn", "cn", "cn_windowed", "tuned_cn", "tuned_cn_windowed")}
    assert all(t.shape == (8, 4, 8, 8) and torch.isfinite(t).all() for t in out.values())
    assert rel(out["cn"], out["nocn"]) > 0.05
    assert rel(out["cn_windowed"], out["cn"]) < 1e-4
    assert rel(out["tuned_cn"], out["cn"]) > 1e-3 and rel(out["tuned_cn_windowed"], out["tuned_cn"]) > 1e-4


def test_other_unet_function_wrappers_compose_with_context_windows(comfy_server):
    """A node that sets the single-slot UNet function wrapper (replacing whatever was there,
    as many packs do) before or after VRWKV Context Windows: both run in either order, with
    the same result. A second VRWKV Context Windows replaces the first."""
    g = clip_graph()
    g["patch"] = patch(["ckpt", 0])
    g["tune"] = tune_node(["patch", 0], steps=2)
    probe = {"class_type": "ProbeUnetFunctionWrapper", "inputs": {"scale": 0.9}}
    g["windowed"] = windows(["tune", 0])
    g["probed"] = {**probe, "inputs": {**probe["inputs"], "model": ["tune", 0]}}
    g["probe_then_windows"] = windows(["probed", 0])
    g["windows_then_probe"] = {**probe, "inputs": {**probe["inputs"], "model": ["windowed", 0]}}
    g["windows_again"] = windows(["windowed", 0], window=8)         # the whole 8-frame clip: no windows
    models = ("tune", "windowed", "probed", "probe_then_windows", "windows_then_probe", "windows_again")
    for key in models:
        sample_and_save(g, key, [key, 0], f"compat_wrap_{key}")
    comfy_server.run(g, timeout=1200)
    out = {k: read_latent(comfy_server, f"compat_wrap_{k}") for k in models}
    assert rel(out["windowed"], out["tune"]) > 1e-4 and rel(out["probed"], out["tune"]) > 1e-2
    assert torch.equal(out["probe_then_windows"], out["windows_then_probe"])
    for alone in ("windowed", "probed"):
        assert rel(out["windows_then_probe"], out[alone]) > 1e-4, alone
    assert torch.equal(out["windows_again"], out["tune"])
