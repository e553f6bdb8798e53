"""End to end: every example workflow, converted to the API form and queued over HTTP on
the random SD1.5 checkpoint and the generated 8-frame 64x64 clip with small step counts,
writes a video with the clip's frame count and size, and its coherence numbers (edit vs
source) reach the history and the canvas's PreviewAny. The re-edit workflow runs on the
weights and inversion the first one saved. The VideoHelperSuite workflow (skipped where VHS
is not installed: VRWKV_EXTRA_NODES) loads 4 frames after the first 2, resized to 48x48, and
Video Combine writes them as an mp4."""

import json
import math
from pathlib import Path

import pytest

from harness import CHECKPOINTS, CLIP_NAME, VHS_MISSING, video_info
from workflow_api import point_at, set_inputs, ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ORDER = ("vrwkv_edit_video", "vrwkv_reedit_saved_weights", "vrwkv_edit_sampler_custom",  # all of workflows/
         "vrwkv_long_clip", "vrwkv_edit_vhs")
# (tests/test_workflow_files.py pins the list)


@pytest.mark.parametrize("name", ORDER)
def test_workflow_writes_the_edited_video(name, comfy_server):
    if name == "vrwkv_edit_vhs" and not comfy_server.has_node("VHS_LoadVideo"):
        pytest.skip(VHS_MISSING)
    graph = ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), comfy_server.object_info())
    point_at(graph, CHECKPOINTS["shallow"], CLIP_NAME, frames=8, size=64, tune_steps=3, ddim_steps=5)
    expected = {"frames": 8, "width": 64, "height": 64}
    if name == "vrwkv_long_clip":   # its windows shrunk with the clip, so the 8 frames still run in windows
        set_inputs(graph, {"VRWKVTuneOnVideo": {"window": 4}, "VRWKVContextWindows": {"window": 4, "overlap": 1}})
    if name == "vrwkv_edit_vhs":
        set_inputs(graph, {"VHS_LoadVideo": {"skip_first_frames": 2, "frame_load_cap": 4, "custom_width": 48,
                                             "custom_height": 48}})
        expected = {"frames": 4, "width": 48, "height": 48}
    before = set(comfy_server.output_dir.rglob("*.mp4"))
    entry = comfy_server.run(graph, timeout=1800)
    new = sorted(set(comfy_server.output_dir.rglob("*.mp4")) - before)
    assert len(new) == 1, new
    assert video_info(new[0]) == expected
    outputs = {graph[key]["class_type"]: out for key, out in entry["outputs"].items()}
    numbers = outputs["VRWKVVideoCoherence"]["coherence"][0]
    assert len(numbers) == 7 and all(math.isfinite(v) and v >= 0 for v in numbers.values()), numbers
    assert outputs["PreviewAny"]["text"] == outputs["VRWKVVideoCoherence"]["text"]
