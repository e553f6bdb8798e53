"""The pack in a real ComfyUI: it imports, its nodes are listed, and the core nodes the
example workflows rely on exist and run on the random checkpoints."""

import torch

from harness import CHECKPOINTS, CLIP_NAME, pack_import_errors, read_latent, video_info

CORE_NODES = ("CheckpointLoaderSimple", "CLIPTextEncode", "VAEEncode", "VAEDecode", "KSampler", "SamplerCustom",
              "SamplerCustomAdvanced", "LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "SaveLatent",
              "LoadLatent")


def test_pack_imports_without_errors(comfy_server):
    import vrwkv_editor
    log = comfy_server.log_text()
    assert not pack_import_errors(log), log[-4000:]
    info = comfy_server.object_info()
    missing = [n for n in (*vrwkv_editor.NODE_CLASS_MAPPINGS, *CORE_NODES) if n not in info]
    assert not missing, missing
    for node_id, name in vrwkv_editor.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert info[node_id]["display_name"] == name


def test_clip_roundtrip_through_core_video_nodes(comfy_server):
    """LoadVideo -> VAEEncode gives 8 latents of 8x8; VAEDecode -> CreateVideo ->
    SaveVideo writes a video with the clip's frame count and size."""
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINTS["shallow"]}},
        "video": {"class_type": "LoadVideo", "inputs": {"file": CLIP_NAME}},
        "frames": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["frames", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "latents/roundtrip"}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["ckpt", 2]}},
        "mk": {"class_type": "CreateVideo", "inputs": {"images": ["dec", 0], "fps": ["frames", 2]}},
        "out": {"class_type": "SaveVideo", "inputs": {"video": ["mk", 0], "filename_prefix": "video/roundtrip",
                                                      "format": "auto", "codec": "auto"}},
    }
    comfy_server.run(graph, timeout=600)
    lat = read_latent(comfy_server, "roundtrip")
    assert lat.shape == (8, 4, 8, 8) and torch.isfinite(lat).all()
    videos = list((comfy_server.output_dir / "video").glob("roundtrip*"))
    assert len(videos) == 1 and video_info(videos[0]) == {"frames": 8, "width": 64, "height": 64}


def test_full_topology_checkpoint_loads_as_sd15(comfy_server_full):
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINTS["full"]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a man skiing", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "ks": {"class_type": "KSampler", "inputs": {"model": ["ckpt", 0], "seed": 0, "steps": 1, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "positive": ["pos", 0],
                                                    "negative": ["pos", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "latents/full"}},
    }
    comfy_server_full.run(graph, timeout=600)
    assert "model_type EPS" in comfy_server_full.log_text()
    lat = read_latent(comfy_server_full, "full")
    assert lat.shape == (2, 4, 8, 8) and torch.isfinite(lat).all()


def test_template_browser_lists_the_example_workflows(comfy_server):
    """ComfyUI serves workflows/ to its template browser, previews included."""
    import urllib.request
    from harness import PACK_NAME, PACK_ROOT
    templates = comfy_server._get("/workflow_templates")
    assert sorted(templates[PACK_NAME]) == sorted(p.stem for p in (PACK_ROOT / "workflows").glob("*.json"))
    for name in templates[PACK_NAME]:
        for ext in ("json", "jpg"):
            with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{PACK_NAME}/{name}.{ext}") as r:
                assert r.status == 200 and len(r.read()) > 1000
