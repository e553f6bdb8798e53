"""The integration tier's helpers: the server tools (tools/comfy_server.py) and API-format
graph pieces shared by the tests."""

from pathlib import Path

from comfy_server import (CHECKPOINTS, CLIP_NAME, CONTROLNET_NAME, PACK_NAME, PACK_ROOT, ComfyServer, cached_checkpoint,  # noqa: F401
                          cached_controlnet, comfyui_path, make_test_clip, pack_import_errors, read_latent,
                          video_info)

PROBE_NODES = Path(__file__).resolve().parent / "probe_nodes"     # test-only nodes (probe_nodes/__init__.py)
VHS_MISSING = ("VideoHelperSuite is not installed in the test server: point VRWKV_EXTRA_NODES at a checkout "
               "of Kosinkadink/ComfyUI-VideoHelperSuite (docs/compatibility.md says how)")


def make_random_lora(checkpoint: Path, out: Path, rank: int = 4, scale: float = 0.05, seed: int = 0) -> Path:
    """A LoRA file (kohya key names, as LoraLoaderModelOnly reads them) with random rank-`rank`
    factors for every attention projection of the checkpoint's UNet: strong enough to change
    the samples (each factor ~ N(0, scale^2), alpha = rank)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    prefix, g, tensors = "model.diffusion_model.", torch.Generator().manual_seed(seed), {}
    with safe_open(str(checkpoint), framework="pt") as f:
        for key in sorted(f.keys()):
            if key.startswith(prefix) and key.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
                rows, cols = f.get_slice(key).get_shape()
                name = "lora_unet_" + key[len(prefix):-len(".weight")].replace(".", "_")
                tensors[f"{name}.lora_up.weight"] = scale * torch.randn(rows, rank, generator=g)
                tensors[f"{name}.lora_down.weight"] = scale * torch.randn(rank, cols, generator=g)
                tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    return out


def clip_graph(depth: str = "shallow", prompt: str = "a man skiing") -> dict:
    """API-format nodes: checkpoint "ckpt", prompts "pos" and (empty) "neg", the test clip
    encoded to 8 latents "latent"."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINTS[depth]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "video": {"class_type": "LoadVideo", "inputs": {"file": CLIP_NAME}},
        "frames": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "latent": {"class_type": "VAEEncode", "inputs": {"pixels": ["frames", 0], "vae": ["ckpt", 2]}},
    }


def sample_and_save(graph: dict, key: str, model: list, prefix: str, steps: int = 3, after: str | None = None) -> None:
    """Adds a KSampler on clip_graph's latent (seed 7, euler, cfg 5, denoise 0.7) and a
    SaveLatent writing latents/<prefix>. With `after` (a node with a LATENT output) the
    sampler runs after that node: ComfyUI shares the outputs of nodes with equal inputs, so
    a second sampler identical to an earlier one would only replay the earlier result."""
    latent = ["latent", 0]
    if after is not None:       # latent + 0 * after's LATENT: the same values, a new dependency
        graph[f"zero_{key}"] = {"class_type": "LatentMultiply", "inputs": {"samples": [after, 0], "multiplier": 0.0}}
        graph[f"latent_{key}"] = {"class_type": "LatentAdd", "inputs": {"samples1": latent, "samples2": [f"zero_{key}", 0]}}
        latent = [f"latent_{key}", 0]
    graph[f"ks_{key}"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 7, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": latent, "denoise": 0.7}}
    graph[f"save_{key}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"ks_{key}", 0],
                                                                   "filename_prefix": f"latents/{prefix}"}}
