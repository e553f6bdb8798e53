"""The example workflows, checked without ComfyUI: they parse, every node type exists (ours
in NODE_CLASS_MAPPINGS, core ones in tests/data/node_widgets.json, written by
tools/build_workflows.py from the page that built them), every node carries one value per
widget, and the link table agrees with the nodes' inputs and outputs. The recorded
widget lists of our own nodes must match their current schemas: change a node's inputs
and this fails until the workflows are rebuilt."""

import json
from pathlib import Path

import pytest

import vrwkv_editor
from workflow_api import has_control_widget

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
WIDGETS = json.loads((ROOT / "tests" / "data" / "node_widgets.json").read_text())["widgets"]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def schema_widgets(cls) -> list[str]:
    """Widget names the page makes for one of our V1 nodes: widget inputs in order, with
    a control widget after each seed-like INT, an upload button after upload combos."""
    spec = cls.INPUT_TYPES()
    names = []
    for name, entry in {**spec["required"], **spec.get("optional", {})}.items():
        kind = entry[0]
        if isinstance(kind, list) or kind in WIDGET_TYPES:
            names.append(name)
            if has_control_widget(name, entry):
                names.append("control_after_generate")
    return names


def test_there_are_five_workflows_with_previews():
    assert [p.stem for p in WORKFLOWS] == ["vrwkv_edit_sampler_custom", "vrwkv_edit_vhs", "vrwkv_edit_video",
                                           "vrwkv_long_clip", "vrwkv_reedit_saved_weights"]
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").stat().st_size > 10_000


def upstream(wf: dict, node: dict, input_name: str) -> dict:
    links = {link[0]: link for link in wf["links"]}
    nodes = {n["id"]: n for n in wf["nodes"]}
    [link] = [i["link"] for i in node["inputs"] if i["name"] == input_name]
    return nodes[links[link][1]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_frames_are_capped_and_sized_before_encoding(path):
    """What VAE Encode gets is a capped, resized batch: core workflows pick frames (Image From
    Batch) and resize (Upscale Image) after decoding, and their note says that core decodes
    the whole file first and names the VideoHelperSuite workflow; the VHS workflow caps, skips
    and resizes while decoding."""
    wf = json.loads(path.read_text())
    [encode] = [n for n in wf["nodes"] if n["type"] == "VAEEncode"]
    source = upstream(wf, encode, "pixels")
    if source["type"] == "VHS_LoadVideo":
        values = source["widgets_values"]
        assert (values["frame_load_cap"], values["custom_width"], values["custom_height"]) == (16, 512, 512)
        assert values["skip_first_frames"] == 0 and values["select_every_nth"] == 1
        return
    assert source["type"] == "ImageScale" and source["widgets_values"][1:3] == [512, 512]
    pick = upstream(wf, source, "image")
    assert pick["type"] == "ImageFromBatch" and 8 <= pick["widgets_values"][1] <= 120
    assert upstream(wf, pick, "image")["type"] == "GetVideoComponents"
    [note] = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert "decode every frame" in note and "vrwkv_edit_vhs" in note


@pytest.mark.parametrize("node_id", sorted(vrwkv_editor.NODE_CLASS_MAPPINGS))
def test_recorded_widgets_of_our_nodes_match_their_schemas(node_id):
    if node_id in WIDGETS:
        assert WIDGETS[node_id] == schema_widgets(vrwkv_editor.NODE_CLASS_MAPPINGS[node_id])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_is_consistent(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and max(nodes) <= wf["last_node_id"]
    for node in wf["nodes"]:
        assert node["type"] in WIDGETS, f"unknown node type {node['type']}"
        values = node.get("widgets_values") or []
        if isinstance(values, dict):      # saved by name (VideoHelperSuite): the node's widgets, and its format's
            assert set(WIDGETS[node["type"]]) <= set(values), node["type"]
        else:
            assert len(values) == len(WIDGETS[node["type"]]), node["type"]
        assert node.get("mode", 0) == 0
    links = {link[0]: link for link in wf["links"]}
    assert len(links) == len(wf["links"]) and max(links) <= wf["last_link_id"]
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == inp["type"] == kind or "*" in (out["type"], inp["type"])
    for node in wf["nodes"]:
        for inp in node.get("inputs", []):
            assert inp.get("link") is None or inp["link"] in links
        for out in node.get("outputs", []):
            assert all(link in links for link in out.get("links") or [])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_required_inputs_are_connected(path):
    """Every required non-widget input of our nodes has a link (a workflow that cannot run
    would otherwise only fail in ComfyUI)."""
    wf = json.loads(path.read_text())
    for node in wf["nodes"]:
        cls = vrwkv_editor.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, entry in cls.INPUT_TYPES()["required"].items():
            if not (isinstance(entry[0], list) or entry[0] in WIDGET_TYPES):
                assert name in linked, f"{node['type']}.{name} is not connected in {path.name}"
