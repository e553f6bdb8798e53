"""UI-format workflow (as the canvas saves it) -> API-format graph (what POST /prompt
takes), using the server's /object_info for input order. The browser check asserts that
this gives the same graph as the page's own graphToPrompt()."""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = {"Note", "MarkdownNote"}
# Display widgets the page adds to core nodes and sends with the prompt (empty until the
# node has run), though /object_info does not list them as inputs
PAGE_WIDGETS = {"PreviewAny": {"preview": ""}}
# Widgets of packs that save widgets by name which the page does not queue (VHS's preview and upload button)
NAMED_DISPLAY_WIDGETS = {"videopreview", "choose video to upload"}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def has_control_widget(name: str, spec) -> bool:
    """The page adds a 'control after generate' widget after an INT input whose options ask
    for one, or, when they say nothing, one named seed or noise_seed."""
    options = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate", name in ("seed", "noise_seed")))


def widget_inputs(info: dict) -> list[tuple[str, bool]]:
    """(input name, followed by a control widget) for each widget of a node type, in order."""
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order", {})
    names = order.get("required", []) + order.get("optional", []) if order else list(specs)
    return [(n, has_control_widget(n, specs[n])) for n in names if is_widget(specs[n])]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}      # [id, from node, from slot, to node, to slot, type]
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed; not handled")
        inputs = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        inputs.update(PAGE_WIDGETS.get(node["type"], {}))
        values = node.get("widgets_values", [])
        if isinstance(values, dict):      # packs that save widgets by name (VideoHelperSuite), extra widgets too
            for name, value in values.items():
                if name not in NAMED_DISPLAY_WIDGETS and value is not None:
                    inputs.setdefault(name, value)
        else:
            values = iter(values)
            for name, control in widget_inputs(object_info[node["type"]]):
                value = next(values)
                inputs.setdefault(name, value)
                if control:
                    next(values)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or object_info[node["type"]]["display_name"]}}
    return api


def set_inputs(api: dict, overrides: dict, strict: bool = True) -> None:
    """overrides: {node type or title: {input: value}}; with strict, every key must match a node."""
    for key, values in overrides.items():
        nodes = [n for n in api.values() if key in (n["class_type"], n["_meta"]["title"])]
        if strict and not nodes:
            raise KeyError(f"no node {key!r} in the workflow")
        for node in nodes:
            node["inputs"].update(values)


def point_at(api: dict, ckpt: str, video: str, frames: int | None = None, size: int | None = None,
             tune_steps: int | None = None, ddim_steps: int | None = None) -> None:
    """Points an example workflow at a checkpoint and clip, optionally shrinking it (fewer
    frames, smaller frames, fewer steps) for a quick run."""
    overrides = {"CheckpointLoaderSimple": {"ckpt_name": ckpt}, "LoadVideo": {"file": video},
                 "VHS_LoadVideo": {"video": video}}
    if frames:
        overrides["ImageFromBatch"] = {"length": frames}
        overrides["VHS_LoadVideo"]["frame_load_cap"] = frames
    if size:
        overrides["ImageScale"] = {"width": size, "height": size}
        overrides["VHS_LoadVideo"].update(custom_width=size, custom_height=size)
    if tune_steps:
        overrides["VRWKVTuneOnVideo"] = {"steps": tune_steps}
    if ddim_steps:
        overrides["VRWKVDDIMInversion"] = overrides["VRWKVKSampler"] = {"steps": ddim_steps}
    set_inputs(api, overrides, strict=False)
