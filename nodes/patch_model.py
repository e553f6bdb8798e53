"""VRWKV Patch Model: adds 3D-VRWKV blocks to an SD1.5 MODEL's skip connections and mid block."""

from ..vrwkv.config import DEFAULT, PLACEMENTS, SKIP_FUSIONS, BlockConfig
from ..vrwkv.frame_attention import SparseCausalAttention, transformer_blocks
from ..vrwkv.layout import LEVEL_CHOICES, block_spec, unet_layout
from ..vrwkv.patch import VRWKVBlocks, VRWKVPatch
from ..vrwkv.weights import check_state_matches, load_weights
from .common import CATEGORY, find_patch, log, require_sd15, weights_files, weights_folder
from .fingerprint import check_base, model_base

NONE = "none"
# Widget choices -> BlockConfig values; the widgets' defaults are config.DEFAULT's.
CHANNEL_MIX = {"4x (paper)": 4, "2x": 2, "1x": 1, "none": 0}
PROJECTIONS = {"full": None, "rank 1/2": 0.5, "rank 1/4": 0.25, "rank 1/8": 0.125}
FRAME_ATTENTION = {"first and previous frame": "first+previous", "own frame (SD)": "self"}
EDIT_END = DEFAULT.end(edit=True)     # edit_end_percent's widget default


def choice(table: dict, value) -> str:
    return next(k for k, v in table.items() if v == value)


def widget_config(placement, resolution, channel_mix, projections, skip_fusion, fused_rkv,
                  half_precision_sampling, frame_attention, end_percent, edit_end_percent) -> BlockConfig:
    """The node's widgets as a BlockConfig (DEFAULT's where no widget sets a field)."""
    return DEFAULT.replace(placement=placement, min_level=LEVEL_CHOICES[resolution],
                           channel_mix=CHANNEL_MIX[channel_mix], rank=PROJECTIONS[projections],
                           fused_rkv=fused_rkv, skip_fusion=skip_fusion,
                           half_precision_sampling=half_precision_sampling,
                           frame_attention=FRAME_ATTENTION[frame_attention], end_percent=end_percent,
                           edit_end_percent=edit_end_percent)


def apply_vrwkv(model, spec: dict, state: dict | None = None, base_deltas: dict | None = None,
                info: dict | None = None, source: str = "VRWKV Patch Model", prompt: dict | None = None,
                node_id=None):
    """A clone of `model` with VRWKV blocks built from `spec` (and loaded from `state`),
    tuned base weights applied as weight patches; the patch records the model it was put on
    (fingerprint, and the checkpoint's name if `prompt` shows it). The input MODEL is not
    modified."""
    require_sd15(model, source)
    if find_patch(model) is not None:
        raise ValueError(f"{source}: this MODEL already has VRWKV blocks; connect the checkpoint's MODEL "
                         "instead (or use the patched MODEL as it is)")
    layout = unet_layout(model.get_model_object("diffusion_model"))
    expected = block_spec(layout, BlockConfig.from_spec(spec))["blocks"]
    for name, b in spec["blocks"].items():
        if expected.get(name) != b:
            raise ValueError(f"{source}: block {name!r} of the weights ({b}) does not fit this UNet "
                             f"({expected.get(name, 'no such block')}); the file was made for another model")
    blocks = VRWKVBlocks(spec)
    if state is not None:
        check_state_matches(state, {k: v.shape for k, v in blocks.state_dict().items()}, source)
        blocks.load_state_dict(state)
    patch = VRWKVPatch(blocks, info, base_deltas, model_base(model, prompt, node_id))
    patch.set_ends(model.get_model_object("model_sampling").percent_to_sigma)
    patched = model.clone()
    patched.set_model_output_block_patch(patch)
    if blocks.config.frame_attention == "first+previous":
        import comfy.ldm.modules.attention
        attention = SparseCausalAttention(comfy.ldm.modules.attention.optimized_attention)
        for key in transformer_blocks(model.get_model_object("diffusion_model")):
            patched.set_model_attn1_replace(attention, *key)
    if base_deltas:
        missing = set(base_deltas) - set(patched.add_patches({k: (v,) for k, v in base_deltas.items()}, 1.0, 1.0))
        if missing:
            raise ValueError(f"{source}: tuned UNet weight {sorted(missing)[0]!r} is not in this model")
    count = sum(p.numel() for p in blocks.parameters())
    log.info(f"VRWKV: {len(spec['blocks'])} blocks ({', '.join(spec['blocks'])}), {count / 1e6:.2f} M parameters")
    return patched


def load_weights_file(name: str):
    """(spec, state, base_deltas, info) of a file in models/vrwkv."""
    import folder_paths
    weights_folder()
    path = folder_paths.get_full_path("vrwkv", name)
    if path is None:
        raise ValueError(f"VRWKV weights {name!r} not found in {weights_folder()}; refresh the node list or "
                         "save weights there first")
    return load_weights(path)


class VRWKVPatchModel:
    DESCRIPTION = ("Adds 3D-VRWKV blocks (bidirectional RWKV over all frames at once, cost linear in frames) "
                   "to an SD1.5 model's skip connections and mid block, and by default lets each frame's "
                   "self-attention read the first and the previous frame. The blocks start as an exact "
                   "identity; tune them on the clip with VRWKV Tune On Video. By default they act in the first "
                   "half of sampling, where motion forms, and in an edit (VRWKV DDIM Inversion and sampling from "
                   "it) treat the first frame as having a still past.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The SD1.5 model with VRWKV blocks (the input MODEL is left unchanged).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model (from Load Checkpoint)."}),
                "placement": (list(PLACEMENTS), {"default": DEFAULT.placement, "tooltip":
                              "Where the blocks go: fusing each encoder skip with the decoder (skip), on the "
                              "mid-block output (mid), or both as in the paper (skip+mid). mid tunes in about a "
                              "quarter of skip+mid's memory and learns the clip's motion a little less closely."}),
                "resolution": (list(LEVEL_CHOICES), {"default": choice(LEVEL_CHOICES, DEFAULT.min_level), "tooltip":
                               "Which UNet levels get blocks. High-resolution levels hold most tokens: "
                               "'half and below' or 'quarter and below' save most memory on long or large clips."}),
            },
            "optional": {
                "weights": ([NONE] + weights_files(), {"default": NONE, "tooltip":
                            "Tuned VRWKV weights from models/vrwkv to load. Their block layout replaces "
                            "placement, resolution and the block options below, frame_attention included (not "
                            "half_precision_sampling, end_percent and edit_end_percent, which apply as set here)."}),
                "channel_mix": (list(CHANNEL_MIX), {"default": choice(CHANNEL_MIX, DEFAULT.channel_mix), "tooltip":
                                "Width of each block's channel mix (RWKV's feed-forward) as a multiple of its "
                                "channels; 'none' leaves it out. It holds most of a block's parameters, so a "
                                "narrower one trains faster with less memory."}),
                "projections": (list(PROJECTIONS), {"default": choice(PROJECTIONS, DEFAULT.rank), "tooltip":
                                "The r, k, v and output projections of each block: full matrices, or two thin "
                                "factors through a fraction of the channels (fewer parameters, less optimiser "
                                "memory)."}),
                "skip_fusion": (list(SKIP_FUSIONS), {"default": DEFAULT.skip_fusion, "tooltip":
                                "How a skip block uses the decoder feature: 'gate' lets it only gate the encoder "
                                "skip; 'merge' feeds both into the bidirectional mixing (the paper's merge of "
                                "skip and decoder features; wider key/value projections)."}),
                "fused_rkv": ("BOOLEAN", {"default": DEFAULT.fused_rkv, "tooltip":
                              "Compute r, k and v in one pass (one projection, one frame interpolation, one "
                              "convolution over their concatenated channels) instead of three."}),
                "half_precision_sampling": ("BOOLEAN", {"default": DEFAULT.half_precision_sampling, "tooltip":
                                            "When the UNet samples in float16/bfloat16 (GPUs), run the blocks in "
                                            "that precision too instead of float32: faster, slightly less exact. "
                                            "Tuning always runs in the blocks' own precision."}),
                "frame_attention": (list(FRAME_ATTENTION), {"default": choice(FRAME_ATTENTION, DEFAULT.frame_attention),
                                    "tooltip": "What each frame's self-attention reads: the first and the previous "
                                    "frame as well as its own (Tune-A-Video's cross-frame attention: the edit's "
                                    "details stay the same from frame to frame; about twice that layer's "
                                    "cost), or only its own frame, as SD does."}),
                "end_percent": ("FLOAT", {"default": DEFAULT.end_percent, "min": 0.05, "max": 1.0, "step": 0.05,
                                "tooltip": "How far into sampling (and DDIM inversion) the blocks act, as "
                                "ControlNet's end_percent: from the start (high noise, where layout and motion "
                                "form) to this point; after it SD draws the details alone, so the tuned clip's "
                                "appearance does not flicker into an edit. 1.0: all the way. Tuning always uses "
                                "them. Applies to loaded weights too."}),
                "edit_end_percent": ("FLOAT", {"default": EDIT_END, "min": 0.05, "max": 1.0,
                                     "step": 0.05, "tooltip": "end_percent for edits: DDIM inversion and "
                                     "sampling from it (VRWKV KSampler given inverted_latent, VRWKV Sampler "
                                     "(DDIM) with edit on). An edit takes its layout and motion from the source's "
                                     "inversion, and blocks acting later add flicker. Applies to loaded weights "
                                     "too."}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    def patch(self, model, placement, resolution, weights=NONE, channel_mix=choice(CHANNEL_MIX, DEFAULT.channel_mix),
              projections=choice(PROJECTIONS, DEFAULT.rank), skip_fusion=DEFAULT.skip_fusion,
              fused_rkv=DEFAULT.fused_rkv, half_precision_sampling=DEFAULT.half_precision_sampling,
              frame_attention=choice(FRAME_ATTENTION, DEFAULT.frame_attention), end_percent=DEFAULT.end_percent,
              edit_end_percent=EDIT_END, prompt=None, unique_id=None):
        if weights and weights != NONE:
            spec, state, base, info = load_weights_file(weights)
            if (spec["placement"], spec["min_level"]) != (placement, LEVEL_CHOICES[resolution]):
                log.info(f"VRWKV: using the layout stored in {weights} ({spec['placement']}, level >= {spec['min_level']})")
            config = BlockConfig.from_spec(spec).replace(half_precision_sampling=half_precision_sampling,
                                                         end_percent=end_percent,
                                                         edit_end_percent=edit_end_percent)
            spec = {**spec, **config.to_spec()}     # run-time choices, not a layout
            patched = apply_vrwkv(model, spec, state, base, info, prompt=prompt, node_id=unique_id)
            warning = check_base(patched, info, weights, unique_id)
            return {"ui": {"text": [warning]}, "result": (patched,)} if warning else (patched,)
        require_sd15(model, "VRWKV Patch Model")
        config = widget_config(placement, resolution, channel_mix, projections, skip_fusion, fused_rkv,
                               half_precision_sampling, frame_attention, end_percent, edit_end_percent)
        return (apply_vrwkv(model, block_spec(unet_layout(model.get_model_object("diffusion_model")), config),
                            prompt=prompt, node_id=unique_id),)
