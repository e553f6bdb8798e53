"""VRWKV Video Coherence in a real ComfyUI on the generated 8-frame 64x64 clip (a disc and
a square moving about 5 px per frame): its numbers and summary reach the history and core
PreviewAny, a source of another size is resized, a frame-count mismatch is refused."""

import pytest

NODE = "VRWKVVideoCoherence"


def graph(source: list) -> dict:
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": "vrwkv_test_clip.mp4"}},
        "frames": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "big": {"class_type": "ImageScale", "inputs": {"image": ["frames", 0], "upscale_method": "bilinear",
                                                       "width": 128, "height": 128, "crop": "disabled"}},
        "first4": {"class_type": "ImageFromBatch", "inputs": {"image": ["frames", 0], "batch_index": 0, "length": 4}},
        "coh": {"class_type": NODE, "inputs": {"edited": ["frames", 0], "source": source}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["coh", 5]}},
    }


def test_clip_against_itself_at_twice_the_size(comfy_server):
    entry = comfy_server.run(graph(["big", 0]))
    out = entry["outputs"]["coh"]
    numbers, summary = out["coherence"][0], out["text"][0]
    assert set(numbers) == {"warp_error", "flicker", "motion_epe", "source_warp_error", "source_flicker",
                            "own_warp_error", "flow_unreliable"}
    assert numbers["motion_epe"] < 0.2                      # the same motion
    assert numbers["warp_error"] == pytest.approx(numbers["source_warp_error"], abs=0.005)
    assert numbers["flicker"] == pytest.approx(numbers["source_flicker"], abs=0.002)
    assert f"warp error by the source's flow: {numbers['warp_error']:.4f}" in summary
    assert "resized from 128x128" in summary
    assert entry["outputs"]["show"]["text"] == [summary]     # the STRING output, shown by core PreviewAny


def test_frame_count_mismatch_is_refused(comfy_server):
    with pytest.raises(RuntimeError, match="VRWKV Video Coherence: edited has 8 frames but source has 4"):
        comfy_server.run(graph(["first4", 0]))
