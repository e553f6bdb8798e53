"""Builds the example workflows in workflows/ with ComfyUI's own page, so they are saved
exactly as the canvas saves them (node sizes, widget lists, link tables of the frontend
that made them): each graph below is created through the page's LiteGraph API, then
serialized. Needs a ComfyUI checkout (COMFYUI_PATH), Debian's chromium, and
VideoHelperSuite for vrwkv_edit_vhs (VRWKV_EXTRA_NODES: see tools/comfy_server.py).

    COMFYUI_PATH=... COMFYUI_PYTHON=... VRWKV_EXTRA_NODES=... python tools/build_workflows.py
"""

import json
from pathlib import Path

from comfy_browser import ComfyPage
from comfy_server import ComfyServer
from load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv.config import DEFAULT
from vrwkv_editor.vrwkv.tuning import TuneSettings

ROOT = Path(__file__).resolve().parents[1]

SOURCE = "a man skiing"
EDIT = "a panda skiing, van Gogh style"
CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
VIDEO = "man-skiing.mp4"
NAME = "man-skiing"

# node key: (type, [column, row], {widget: value}, title or None); build_js lays the columns out
CLIP_IN = {
    "video": ("LoadVideo", [0, 0], {"file": VIDEO}, "Load the source clip"),
    "parts": ("GetVideoComponents", [0, 1], {}, None),
    "pick": ("ImageFromBatch", [1, 0], {"batch_index": 0, "length": 16}, "Frames to edit (8-24)"),
    "size": ("ImageScale", [1, 1], {"upscale_method": "lanczos", "width": 512, "height": 512, "crop": "center"},
             "Resize to 512x512"),
    "ckpt": ("CheckpointLoaderSimple", [0, 2], {"ckpt_name": CKPT}, "SD1.5 checkpoint"),
    "encode": ("VAEEncode", [2, 0], {}, None),
    "src": ("CLIPTextEncode", [1, 2], {"text": SOURCE}, "Source prompt (what the clip shows)"),
    "edit": ("CLIPTextEncode", [1, 3], {"text": EDIT}, "Edit prompt"),
    "empty": ("CLIPTextEncode", [1, 4], {"text": ""}, "Empty prompt (inversion, negative)"),
}
CLIP_LINKS = [
    ("video", 0, "parts", "video"), ("parts", 0, "pick", "image"), ("pick", 0, "size", "image"),
    ("size", 0, "encode", "pixels"), ("ckpt", 2, "encode", "vae"),
    ("ckpt", 1, "src", "clip"), ("ckpt", 1, "edit", "clip"), ("ckpt", 1, "empty", "clip"),
]
# VideoHelperSuite (Kosinkadink/ComfyUI-VideoHelperSuite): frames capped, skipped and resized
# while decoding, the edit saved with Video Combine at the loaded frame rate
VHS_IN = {
    "video": ("VHS_LoadVideo", [0, 0], {"video": VIDEO, "force_rate": 0, "custom_width": 512, "custom_height": 512,
                                        "frame_load_cap": 16, "skip_first_frames": 0, "select_every_nth": 1},
              "Load 16 frames at 512x512 (VideoHelperSuite)"),
    "info": ("VHS_VideoInfoLoaded", [1, 0], {}, None),
    **{key: CLIP_IN[key] for key in ("ckpt", "encode", "src", "edit", "empty")},
}
VHS_IN_LINKS = [("video", 0, "encode", "pixels"), ("video", 3, "info", "video_info")] + \
    [link for link in CLIP_LINKS if link[0] == "ckpt"]
VHS_OUTPUT = {
    "decode": ("VAEDecode", [5, 0], {}, None),
    "combine": ("VHS_VideoCombine", [5, 1], {"loop_count": 0, "filename_prefix": "vrwkv_edit", "format": "video/h264-mp4",
                                             "pingpong": False, "save_output": True}, None),
}
VHS_OUTPUT_LINKS = [("ckpt", 2, "decode", "vae"), ("decode", 0, "combine", "images"),
                    ("info", 0, "combine", "frame_rate")]

TUNE = {
    "patch": ("VRWKVPatchModel", [2, 1], {"placement": DEFAULT.placement, "resolution": "all"}, None),
    "tune": ("VRWKVTuneOnVideo", [3, 0], {"steps": TuneSettings.steps, "seed": 33, "trainable": "vrwkv",
                                               "gradient_checkpointing": True, "training_dtype": "auto",
                                               "save_name": NAME, "note": SOURCE}, None),
    "curve": ("PreviewImage", [3, 1], {}, "Loss curve"),
}
TUNE_LINKS = [("ckpt", 0, "patch", "model"), ("patch", 0, "tune", "model"), ("encode", 0, "tune", "latent"),
              ("src", 0, "tune", "conditioning"), ("tune", 1, "curve", "images")]
OUTPUT = {
    "decode": ("VAEDecode", [5, 0], {}, None),
    "mkvideo": ("CreateVideo", [5, 1], {"fps": 8.0}, None),
    "save": ("SaveVideo", [5, 2], {"filename_prefix": "video/vrwkv_edit", "format": "auto", "codec": "auto"},
             None),
}
OUTPUT_LINKS = [("ckpt", 2, "decode", "vae"), ("decode", 0, "mkvideo", "images"), ("parts", 2, "mkvideo", "fps"),
                ("mkvideo", 0, "save", "video")]


def coherence(column, source="size"):
    """The edit measured against the source frames, numbers and plot shown on the canvas."""
    return {"coherence": ("VRWKVVideoCoherence", [column, 0], {}, "Coherence: edit vs source"),
            "coh_text": ("PreviewAny", [column, 1], {}, "Coherence numbers (lower is better)"),
            "coh_plot": ("PreviewImage", [column, 2], {}, "Coherence per frame pair")}, \
           [("decode", 0, "coherence", "edited"), (source, 0, "coherence", "source"),
            ("coherence", 5, "coh_text", "source"), ("coherence", 6, "coh_plot", "images")]


def inversion(model_key, mode):
    return {"invert": ("VRWKVDDIMInversion", [4, 0], {"steps": 50, "cfg": 1.0, "refine": 0, "mode": mode,
                                                          "save_name": NAME}, None)}, \
           [(model_key, 0, "invert", "model"), ("encode", 0, "invert", "latent"), ("empty", 0, "invert", "positive")]


def ksampler(model_key):
    return {"sample": ("VRWKVKSampler", [4, 1], {"seed": 0, "control_after_generate": "fixed", "steps": 50,
                                                      "cfg": 12.5, "denoise": 1.0, "eta": 0.0}, "KSampler (DDIM) edit")}, \
           [(model_key, 0, "sample", "model"), ("edit", 0, "sample", "positive"), ("empty", 0, "sample", "negative"),
            ("encode", 0, "sample", "latent_image"), ("invert", 0, "sample", "inverted_latent"),
            ("sample", 0, "decode", "samples")]


CORE_DECODE = """Core **Load Video** + **Get Video Components** decode every frame of the file at full size
(float32: a 10 s 1080p clip is about 7.5 GB) before the frames are picked and resized. For long or
large files load with VideoHelperSuite's *Load Video* instead (frame cap, skip and size while
decoding): workflow *vrwkv_edit_vhs*."""

NOTE_EDIT = f"""## VRWKV-Editor: edit a video with a prompt

1. **Load the source clip** (Load Video; VideoHelperSuite loaders work too: any IMAGE batch).
   Keep **8-24 frames** (Frames to edit) at **512x512**.
2. **Source prompt**: describe the clip as it is ("{SOURCE}").
3. **VRWKV Tune On Video** fits the model to this clip: {TuneSettings.steps} steps (fewer for stronger
   style changes). It saves `models/vrwkv/{NAME}.safetensors` (a taken name gets a counter,
   `{NAME}_00001`...: the node shows the file written, never replacing one).
4. **VRWKV DDIM Inversion** turns the frames into the noise that regenerates them
   (saved under `output/vrwkv_inversions/` for re-edits).
5. **Edit prompt**: what it should become ("{EDIT}"). KSampler (DDIM): 50 steps, cfg 12.5.

6. **VRWKV Video Coherence** measures the edit against the source (warp error, flicker,
   motion EPE; lower is better; the source's own levels for reference).

Re-edit the same clip without tuning: *vrwkv_reedit_saved_weights*.
Out of memory: lower the frame count, set resolution to *half and below* in VRWKV Patch
Model, keep gradient checkpointing on.

{CORE_DECODE}"""

NOTE_VHS = f"""## VRWKV-Editor with VideoHelperSuite: a clip of any length in, an mp4 out

Needs **VideoHelperSuite** (Kosinkadink/ComfyUI-VideoHelperSuite, in ComfyUI-Manager).
1. **Load Video (VHS)** decodes only what is edited: **frame_load_cap** (16) frames after
   **skip_first_frames**, every **select_every_nth**, resized to **custom_width x
   custom_height** (512x512, center crop) as they are read: memory for 16 frames, not the file.
2. Tune, invert and edit as in *vrwkv_edit_video*: **Source prompt** = what the clip shows
   ("{SOURCE}"), **Edit prompt** = what it should become. VRWKV Tune On Video saves
   `models/vrwkv/{NAME}.safetensors` (never replacing a file).
3. **Video Combine** writes the edit as H.264 mp4 to `output/` at the loaded frame rate
   (Video Info (Loaded): select_every_nth lowers it)."""

NOTE_REEDIT = f"""## Re-edit a tuned clip (no tuning)

Needs a run of *vrwkv_edit_video* first: **VRWKV Load Weights** reads
`models/vrwkv/{NAME}.safetensors`, and the inversion is loaded from
`output/vrwkv_inversions/{NAME}.safetensors` (mode *load saved*: checked against this clip,
steps and cfg). If that run wrote numbered files (`{NAME}_00001`...), pick those names here.
Change the **Edit prompt** and run: seconds instead of minutes.
Keep the frames and size exactly as they were tuned.

{CORE_DECODE}"""

NOTE_CUSTOM = f"""## The same edit with core custom sampling

**VRWKV Sampler DDIM** is a SAMPLER: here it runs inside **SamplerCustomAdvanced** with a
core CFG Guider, noise disabled, starting from the inverted latent with the sigmas that
**VRWKV DDIM Inversion** outputs; its **edit** is on, so the VRWKV blocks run as they did when
inverting (turn it off when sampling from fresh noise). Any core guider (e.g. with ControlNet
applied to the conditioning) composes the same way.

{CORE_DECODE}"""


NOTE_LONG = f"""## Long clips: 120 frames edited in windows

Memory is bounded by these settings, not by the clip's length:
- **VRWKV Tune On Video, window** (16): frames per tuning step; each step tunes a random
  16-frame window. The blocks' decay is normalised by it (stored with the weights).
- **VRWKV Context Windows, window** (16) and **overlap** (4): frames per UNet call in the
  inversion and the sampler; neighbouring windows share 4 frames, blended. **carry** on:
  the VRWKV blocks hand their Bi-WKV state across window boundaries (what lies before a
  window exactly, what lies after it from earlier steps), so the clip is still mixed as one
  sequence.
- **VRWKV Patch Model, resolution**: *half and below* lowers it further.
What still grows with the clip: its latents and frames (small), VAE Encode/Decode (ComfyUI
batches them), and the time (linear in frames).

{CORE_DECODE}"""


def custom_sampling():
    nodes = {
        "guider": ("CFGGuider", [4, 1], {"cfg": 12.5}, None),
        "noise": ("DisableNoise", [4, 2], {}, None),
        "sampler": ("VRWKVSamplerDDIM", [4, 3], {"eta": 0.0, "edit": True}, None),
        "custom": ("SamplerCustomAdvanced", [5, 0], {}, None),
    }
    links = [("tune", 0, "guider", "model"), ("edit", 0, "guider", "positive"), ("empty", 0, "guider", "negative"),
             ("noise", 0, "custom", "noise"), ("guider", 0, "custom", "guider"), ("sampler", 0, "custom", "sampler"),
             ("invert", 1, "custom", "sigmas"), ("invert", 0, "custom", "latent_image"),
             ("custom", 0, "decode", "samples")]
    return nodes, links


def workflows():
    coh_nodes, coh_links = coherence(6)
    inv_nodes, inv_links = inversion("tune", "invert and save")
    ks_nodes, ks_links = ksampler("tune")
    edit = ({**CLIP_IN, **TUNE, **inv_nodes, **ks_nodes, **OUTPUT, **coh_nodes},
            CLIP_LINKS + TUNE_LINKS + inv_links + ks_links + OUTPUT_LINKS + coh_links, NOTE_EDIT)

    load = {"load": ("VRWKVLoadWeights", [2, 1], {"weights": f"{NAME}.safetensors"}, None)}
    inv_nodes, inv_links = inversion("load", "load saved")
    ks_nodes, ks_links = ksampler("load")
    reedit = ({**CLIP_IN, **load, **inv_nodes, **ks_nodes, **OUTPUT, **coh_nodes},
              CLIP_LINKS + [("ckpt", 0, "load", "model")] + inv_links + ks_links + OUTPUT_LINKS + coh_links,
              NOTE_REEDIT)

    inv_nodes, inv_links = inversion("tune", "invert")
    cs_nodes, cs_links = custom_sampling()
    output = {key: (node[0], [6, node[1][1]], *node[2:]) for key, node in OUTPUT.items()}
    coh_nodes, coh_links = coherence(7)
    custom = ({**CLIP_IN, **TUNE, **inv_nodes, **cs_nodes, **output, **coh_nodes},
              CLIP_LINKS + TUNE_LINKS + inv_links + cs_links + OUTPUT_LINKS + coh_links, NOTE_CUSTOM)
    clip_in = {**CLIP_IN, "pick": ("ImageFromBatch", [1, 0], {"batch_index": 0, "length": 120},
                                   "Frames to edit (a long clip: 120)")}
    tune = {**TUNE, "tune": (*TUNE["tune"][:2], {**TUNE["tune"][2], "save_name": f"{NAME}-long", "window": 16},
                             "VRWKV Tune On Video (window 16)"),
            "windows": ("VRWKVContextWindows", [3, 2], {"window": 16, "overlap": 4, "carry": True}, None)}
    inv_nodes, inv_links = inversion("windows", "invert")
    ks_nodes, ks_links = ksampler("windows")
    coh_nodes, coh_links = coherence(6)
    long = ({**clip_in, **tune, **inv_nodes, **ks_nodes, **OUTPUT, **coh_nodes},
            CLIP_LINKS + TUNE_LINKS + [("tune", 0, "windows", "model")] + inv_links + ks_links + OUTPUT_LINKS
            + coh_links, NOTE_LONG)
    inv_nodes, inv_links = inversion("tune", "invert and save")
    ks_nodes, ks_links = ksampler("tune")
    coh_nodes, coh_links = coherence(6, source="video")
    vhs = ({**VHS_IN, **TUNE, **inv_nodes, **ks_nodes, **VHS_OUTPUT, **coh_nodes},
           VHS_IN_LINKS + TUNE_LINKS + inv_links + ks_links + VHS_OUTPUT_LINKS + coh_links, NOTE_VHS)
    return {"vrwkv_edit_video": edit, "vrwkv_reedit_saved_weights": reedit, "vrwkv_edit_sampler_custom": custom,
            "vrwkv_long_clip": long, "vrwkv_edit_vhs": vhs}


BUILD_JS = """
const [nodes, links, note] = arguments;
const g = app.graph;
g.clear();
const made = {};
for (const [key, [type, cell, widgets, title]] of Object.entries(nodes)) {
  const n = LiteGraph.createNode(type);
  if (!n) throw new Error("unknown node type " + type);
  n.cell = cell;
  if (title) n.title = title;
  g.add(n);
  for (const [name, value] of Object.entries(widgets)) {
    const w = n.widgets.find(w => w.name === name);
    if (!w) throw new Error(type + " has no widget " + name);
    w.value = value;
    if (type.startsWith("VHS_")) w.callback?.(value);   // VHS: a format's own widgets, the preview's settings
  }
  made[key] = n;
}
for (const [src, slot, dst, input] of links) {
  const d = made[dst], s = made[src];
  const i = d.findInputSlot(input);
  if (i < 0) throw new Error(d.type + " has no input " + input);
  if (!s.connect(slot, d, i)) throw new Error("cannot connect " + src + " -> " + dst + "." + input);
}
// columns left to right, nodes stacked in row order, prompts wide enough to read
const GAP = 50, TITLE = LiteGraph.NODE_TITLE_HEIGHT;
const nodesIn = Object.values(made);
for (const n of nodesIn) {
  const [w, h] = n.computeSize();
  n.size = n.type === "CLIPTextEncode" ? [420, 150] : [Math.max(w, 300), h];
}
let x = 0;
const columns = Math.max(...nodesIn.map(n => n.cell[0])) + 1;
for (let c = 0; c < columns; c++) {
  const col = nodesIn.filter(n => n.cell[0] === c).sort((a, b) => a.cell[1] - b.cell[1]);
  let y = 0;
  for (const n of col) { n.pos = [x, y + TITLE]; y += n.size[1] + TITLE + GAP; }
  x += Math.max(...col.map(n => n.size[0])) + GAP;
}
const height = Math.max(...nodesIn.map(n => n.pos[1] + n.size[1]));
const m = LiteGraph.createNode("MarkdownNote");
m.pos = [0, height + GAP + TITLE]; m.size = [Math.min(x - GAP, 1100), 250];
m.widgets[0].value = note;
g.add(m);
for (const n of nodesIn) delete n.cell;
g.setDirtyCanvas(true, true);
"""


# only widgets saved in widgets_values (PreviewAny's "preview" display is not)
WIDGETS_JS = """
return Object.fromEntries(arguments[0].map(t => [t, (LiteGraph.createNode(t).widgets || [])
  .filter(w => w.serialize !== false).map(w => w.name)]));
"""


def main():
    out_dir = ROOT / "workflows"
    out_dir.mkdir(exist_ok=True)
    types = set()
    with ComfyServer(checkpoints=()) as server, ComfyPage(server.url) as page:
        for name, (nodes, links, note) in workflows().items():
            page.driver.execute_script(BUILD_JS, nodes, links, note)
            graph = page.serialize()
            types |= {n["type"] for n in graph["nodes"]}
            path = out_dir / f"{name}.json"
            path.write_text(json.dumps(graph, indent=2) + "\n")
            print("wrote", path.relative_to(ROOT))
        # widget names per node type, as this frontend makes them: the unit tier checks the
        # workflows' widget values against it (no ComfyUI there)
        widgets = page.driver.execute_script(WIDGETS_JS, sorted(types))
        version = page_version(server)
    path = ROOT / "tests" / "data" / "node_widgets.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"made_with": version, "widgets": widgets}, indent=1, sort_keys=True) + "\n")
    print("wrote", path.relative_to(ROOT))


def page_version(server) -> str:
    import urllib.request
    with urllib.request.urlopen(server.url + "/system_stats") as r:
        stats = json.loads(r.read())["system"]
    return f"ComfyUI {stats.get('comfyui_version')}, frontend {stats.get('required_frontend_version', '?')}"


if __name__ == "__main__":
    main()
