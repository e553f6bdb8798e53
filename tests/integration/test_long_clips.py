"""A long clip in a real ComfyUI: the 8-frame test clip repeated to 64 frames (64x64), tuned
with a window, inverted and sampled in context windows with carry; frame count and size
kept, the tuned window stored as the decay normalisation, and the windowed model refused
nothing a core sampler does."""

import json
import os

import torch
from safetensors import safe_open

from harness import clip_graph, read_latent

# VRWKV_LONG_CLIP_FRAMES (a multiple of 8) runs a longer clip, e.g. 240 (about ten minutes here).
FRAMES = int(os.environ.get("VRWKV_LONG_CLIP_FRAMES", 64))


def long_clip_graph():
    g = clip_graph()
    g["long"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["frames", 0], "amount": FRAMES // 8}}
    g["latent"]["inputs"]["pixels"] = ["long", 0]
    g["patch"] = {"class_type": "VRWKVPatchModel",
                  "inputs": {"model": ["ckpt", 0], "placement": "skip+mid", "resolution": "all"}}
    g["tune"] = {"class_type": "VRWKVTuneOnVideo", "inputs": {
        "model": ["patch", 0], "latent": ["latent", 0], "conditioning": ["pos", 0], "steps": 2,
        "learning_rate": 1e-3, "seed": 1, "trainable": "vrwkv", "gradient_checkpointing": True,
        "training_dtype": "auto", "save_name": "it_long", "note": "", "window": 8}}
    g["windows"] = {"class_type": "VRWKVContextWindows",
                    "inputs": {"model": ["tune", 0], "window": 16, "overlap": 4, "carry": True}}
    g["inv"] = {"class_type": "VRWKVDDIMInversion", "inputs": {
        "model": ["windows", 0], "latent": ["latent", 0], "positive": ["pos", 0], "steps": 3, "cfg": 1.0,
        "refine": 0, "mode": "invert", "save_name": "unused"}}
    g["ks"] = {"class_type": "VRWKVKSampler", "inputs": {
        "model": ["windows", 0], "seed": 0, "steps": 3, "cfg": 5.0, "positive": ["pos", 0], "negative": ["neg", 0],
        "latent_image": ["latent", 0], "denoise": 1.0, "eta": 0.0, "inverted_latent": ["inv", 0]}}
    g["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "latents/long"}}
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    g["images"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "long/frame"}}
    return g


def test_long_clip_tuned_inverted_and_sampled_in_windows(comfy_server):
    history = comfy_server.run(long_clip_graph(), timeout=1800)
    samples = read_latent(comfy_server, "long")
    assert samples.shape == (FRAMES, 4, 8, 8) and torch.isfinite(samples).all()
    images = history["outputs"]["images"]["images"]
    assert len(images) == FRAMES
    from PIL import Image
    first = comfy_server.output_dir / images[0]["subfolder"] / images[0]["filename"]
    assert Image.open(first).size == (64, 64)
    with safe_open(str(comfy_server.base_dir / "models" / "vrwkv" / "it_long.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["layout"])["norm_frames"] == 8
    assert json.loads(meta["info"])["window"] == 8
