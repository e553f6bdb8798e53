"""VRWKV Context Windows: a MODEL that runs the UNet on a long clip in frame windows
(vrwkv/windows.py), with the VRWKV blocks' Bi-WKV state carried between windows."""

from ..vrwkv.windows import ContextWindows
from .common import CATEGORY

WRAPPER_KEY = "vrwkv_context_windows"    # a later VRWKV Context Windows replaces an earlier one


class VRWKVContextWindows:
    DESCRIPTION = ("Runs the model on long clips in overlapping windows of frames, so sampling and inversion "
                   "memory is bounded by the window, not the clip. With carry, the VRWKV blocks hand their "
                   "Bi-WKV state across window boundaries (what lies before a window exactly, what lies after "
                   "it from earlier steps), so the clip is still mixed as one sequence; overlapping frames are "
                   "blended. Works "
                   "with the VRWKV DDIM nodes, the VRWKV SAMPLER and core samplers; tuning ignores it (use VRWKV "
                   "Tune On Video's window). UNet wrappers of other nodes, before or after it, run around "
                   "the windows; a ControlNet runs once on the whole clip and each window gets its frames' "
                   "share. The input MODEL is unchanged.")
    CATEGORY = CATEGORY + "/sampling"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, windowed: connect it to VRWKV DDIM Inversion and the sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The (tuned) SD1.5 model to run in windows."}),
                "window": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip":
                           "Frames per UNet call: sampling memory grows with this, not with the clip. Clips no "
                           "longer than the window run whole."}),
                "overlap": ("INT", {"default": 4, "min": 0, "max": 4095, "tooltip":
                            "Frames shared by neighbouring windows, blended with linear ramps (must be less than "
                            "window). More overlap smooths boundaries and costs more UNet calls."}),
                "carry": ("BOOLEAN", {"default": True, "tooltip":
                          "Carry the VRWKV blocks' Bi-WKV state and the previous frame across window "
                          "boundaries (needs a VRWKV-patched model; off: windows are independent and joined "
                          "only by the overlap). Windows run in order: the state of every frame before a window "
                          "is exact; that of the frames after it comes from earlier steps, as the window k "
                          "windows ahead was k steps ago (nothing at the first step)."}),
            },
        }

    def apply(self, model, window, overlap, carry):
        from comfy.patcher_extension import WrappersMP
        windows = ContextWindows(window, overlap, carry)     # checks the overlap first
        windowed = model.clone()
        for kind, wrapper in ((WrappersMP.APPLY_MODEL, windows.apply_model_wrapper),
                              (WrappersMP.OUTER_SAMPLE, windows.sampling_run)):
            windowed.remove_wrappers_with_key(kind, WRAPPER_KEY)
            windowed.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
        return (windowed,)
