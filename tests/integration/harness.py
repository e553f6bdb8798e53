"""The integration tier's helpers: the server tools (tools/comfy_server.py) and API-format
graph pieces shared by the tests."""

from comfy_server import (CHECKPOINTS, CLIP_NAME, CONTROLNET_NAME, PACK_ROOT, ComfyServer, cached_checkpoint,  # noqa: F401
                          cached_controlnet, comfyui_path, make_test_clip, pack_import_errors, read_latent,
                          video_info)


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
