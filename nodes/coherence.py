"""VRWKV Video Coherence: temporal-coherence numbers for any IMAGE batch (an edited clip),
and against its source when given, from vrwkv/metrics.py."""

import math

from ..vrwkv.metrics import CoherenceReport, coherence_report
from .common import CATEGORY, show_on_node
from .plots import as_image_tensor, pair_panels

NODE = "VRWKV Video Coherence"
# (output name, report field, tooltip); a field without a source is NaN
FLOATS = (
    ("warp_error", "warp_error", "Mean abs difference (0-1 scale) between each frame and the previous frame warped "
     "onto it by optical flow. With a source: the source's flow, over the pixels where it is reliable (its "
     "occlusions left out; Lai et al. 2018, as video-editing papers measure it): does the edit change from frame "
     "to frame the way the source does? Compare with source_warp_error. Without a source: the clip's own flow, "
     "every pixel counted (see flow_unreliable). Lower is better."),
    ("flicker", "flicker", "Mean change of the frame's average colour between consecutive frames (0-1 scale). "
     "Lower is steadier; compare with source_flicker."),
    ("motion_epe", "motion_epe", "Motion fidelity: mean distance in pixels between the edited clip's optical "
     "flow and the source's. 0 = moves exactly like the source. NaN without a source."),
    ("source_warp_error", "source_warp_error", "The source's own warp error (its flow, its reliable pixels): the "
     "level of a clip with its real motion, the floor for warp_error. NaN without a source."),
    ("source_flicker", "source_flicker", "The source's own flicker. NaN without a source."),
)
# outputs added after summary and plot (saved workflows link outputs by position)
LATER_FLOATS = (
    ("own_warp_error", "own_warp_error", "The edited clip's warp error by its own optical flow, every pixel "
     "counted (warp_error's measure without a source): smoothness whatever the source does. Equals warp_error "
     "without a source."),
    ("flow_unreliable", "warp_unreliable", "Share of pixels (0-1) whose optical flow failed the forward-backward "
     "check, for the flow warp_error used: with a source, the source's occlusions (left out of warp_error); "
     "without one, the clip's own (counted in warp_error). Much more than the source's share: the flow could "
     "not follow the clip (jumps, flicker, noise)."),
)


def node_outputs(report: CoherenceReport):
    """The node's ComfyUI return value: ui text and numbers for the page and the history, and
    the FLOATs, summary and plot."""
    means = report.means()
    means["warp_unreliable"] = 1.0 - means["warp_reliable"]
    if "own_warp_error" not in means:
        means["own_warp_error"] = means["warp_error"]
    values = tuple(means.get(field, math.nan) for _, field, _ in FLOATS)
    later = tuple(means[field] for _, field, _ in LATER_FLOATS)
    summary = report.summary()
    has_source = report.motion_epe is not None
    panels = [
        ("warp error", [("edited", report.warp_error)] + ([("source", report.source_warp_error)] if has_source else [])),
        ("flicker", [("edited", report.flicker)] + ([("source", report.source_flicker)] if has_source else [])),
    ]
    if has_source:
        panels.append(("motion EPE vs source (px)", [("edited", report.motion_epe)]))
    plot = as_image_tensor(pair_panels(panels))
    # JSON for the page: NaN is not valid JSON, so absent values are null
    numbers = {name: (None if math.isnan(v) else v) for (name, _, _), v in zip(FLOATS + LATER_FLOATS, values + later)}
    return {"ui": {"text": [summary], "coherence": [numbers]}, "result": (*values, summary, plot, *later)}


class VRWKVVideoCoherence:
    DESCRIPTION = ("Measures how temporally coherent a clip is (any IMAGE batch: this pack's edits, AnimateDiff, "
                   "...): optical-flow warp error and flicker between consecutive frames, and with the source "
                   "clip the warp error by the source's motion, its motion fidelity (flow end-point error) and the "
                   "source's own levels for reference. Lower is better for every number.")
    CATEGORY = CATEGORY
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT",) * len(FLOATS) + ("STRING", "IMAGE") + ("FLOAT",) * len(LATER_FLOATS)
    RETURN_NAMES = tuple(name for name, _, _ in FLOATS) + ("summary", "plot") + tuple(n for n, _, _ in LATER_FLOATS)
    OUTPUT_TOOLTIPS = tuple(tip for _, _, tip in FLOATS) + (
        "The numbers as text (also shown on the node).",
        "Each metric per pair of consecutive frames (orange: edited, blue: source).",
    ) + tuple(tip for _, _, tip in LATER_FLOATS)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "edited": ("IMAGE", {"tooltip": "The clip to measure: a batch of at least 2 frames in order "
                                                "(e.g. VAE Decode of the edit)."}),
            },
            "optional": {
                "source": ("IMAGE", {"tooltip": "The clip the edit was made from: the same number of frames, any "
                                                "size (resized to the edited size for the measurement). Adds "
                                                "motion fidelity and the source's own levels for reference."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def measure(self, edited, source=None, unique_id=None):
        import comfy.model_management
        import comfy.utils

        bar = None

        def progress(done, total):
            nonlocal bar
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar = bar or comfy.utils.ProgressBar(total, node_id=unique_id)
            bar.update_absolute(done, total)

        comfy.model_management.throw_exception_if_processing_interrupted()
        try:
            report = coherence_report(edited, source, progress)
        except ValueError as e:
            raise ValueError(f"{NODE}: {e}") from e
        out = node_outputs(report)
        show_on_node(unique_id, out["ui"]["text"][0])
        return out
