"""The browser check: ComfyUI's own page (headless Debian chromium) loads every example
workflow through its graph loading with no missing node type and no warning other than the
expected "Missing Models" (the workflows name a real SD1.5 checkpoint), and turns it into
the same API graph as our converter. Screenshots go to the pytest temp dir, or to
workflows/<name>.jpg (the previews the README and the template browser show) with
VRWKV_UPDATE_PREVIEWS=1."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import VHS_MISSING
from workflow_api import ui_to_api

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
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
