"""The browser check: ComfyUI's own page (headless Debian chromium) loads every example
workflow through its graph loading with no missing node type and no warning other than the
expected "Missing Models" (the workflows name a real SD1.5 checkpoint), and turns it into
the same API graph as our converter. VRWKV Tune On Video's seed has no "control after
generate" widget, and a workflow saved while it had one loads with its values. Screenshots go to the pytest temp dir, or to
workflows/<name>.jpg (the previews the README and the template browser show) with
VRWKV_UPDATE_PREVIEWS=1."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import VHS_MISSING
from workflow_api import ui_to_api

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
# workflows/vrwkv_edit_video.json as saved before (its tune node: ..., seed, "fixed", ...)
WITH_SEED_CONTROL = ROOT / "tests" / "data" / "workflow_with_tune_seed_control.json"
pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def page(comfy_server):
    from comfy_browser import ComfyPage
    with ComfyPage(comfy_server.url) as p:
        yield p


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_page_loads_workflow(path, page, comfy_server, tmp_path):
    workflow = json.loads(path.read_text())
    if any(n["type"].startswith("VHS_") for n in workflow["nodes"]) and not comfy_server.has_node("VHS_LoadVideo"):
        pytest.skip(VHS_MISSING)
    assert page.unknown_node_types(workflow) == []
    page.load(workflow)
    unexpected = [d for d in page.dialogs() if not d.startswith("Missing Models")]
    assert unexpected == []
    page.close_dialogs()
    assert page.node_errors() == []
    expected = ui_to_api(workflow, comfy_server.object_info())
    assert page.graph_to_prompt() == expected
    page.fit_view()
    shot = tmp_path / f"{path.stem}.png"
    page.screenshot(shot)
    if os.environ.get("VRWKV_UPDATE_PREVIEWS"):
        from PIL import Image
        Image.open(shot).convert("RGB").save(path.with_suffix(".jpg"), quality=88)


TUNE_VALUES_JS = """const n = app.graph.nodes.find(n => n.type === "VRWKVTuneOnVideo");
return Object.fromEntries(n.widgets.map(w => [w.name, w.value]));"""


def test_tune_seed_has_no_randomize_control_and_old_workflows_keep_their_values(page):
    """A tune node placed by hand shows no "control after generate" widget (the frontend would
    default it to randomize: a new tuning on every queue); a workflow saved with that widget's
    value after the seed loads every other value onto its own widget and queues them."""
    widgets = page.driver.execute_script("return LiteGraph.createNode('VRWKVTuneOnVideo').widgets.map(w => w.name)")
    assert widgets[:4] == ["steps", "learning_rate", "seed", "trainable"]
    old = json.loads(WITH_SEED_CONTROL.read_text())
    for control in ("fixed", "randomize"):
        for node in old["nodes"]:
            if node["type"] == "VRWKVTuneOnVideo":
                node["widgets_values"][3] = control
        page.load(old)
        page.close_dialogs()
        expected = {"steps": 300, "learning_rate": 3e-05, "seed": 33, "trainable": "vrwkv",
                    "gradient_checkpointing": True, "training_dtype": "auto", "save_name": "man-skiing",
                    "note": "a man skiing", "window": 0}
        assert page.driver.execute_script(TUNE_VALUES_JS) == expected
        [queued] = [n["inputs"] for n in page.graph_to_prompt().values() if n["class_type"] == "VRWKVTuneOnVideo"]
        assert {k: v for k, v in queued.items() if not isinstance(v, list)} == expected
