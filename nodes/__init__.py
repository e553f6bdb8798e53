"""ComfyUI nodes (V1 API): thin adapters from widgets to the plain functions in vrwkv/.

Node classes only declare their inputs here; anything that touches ComfyUI is imported
inside the functions that run, so the schemas load (and are tested) without ComfyUI.
"""

from .coherence import VRWKVVideoCoherence
from .ddim import VRWKVDDIMInversion, VRWKVKSampler, VRWKVSamplerDDIM
from .patch_model import VRWKVPatchModel
from .tune import VRWKVTuneOnVideo
from .weights import VRWKVLoadWeights, VRWKVSaveWeights
from .windows import VRWKVContextWindows

NODE_CLASSES = {
    "VRWKVPatchModel": (VRWKVPatchModel, "VRWKV Patch Model"),
    "VRWKVSaveWeights": (VRWKVSaveWeights, "VRWKV Save Weights"),
    "VRWKVLoadWeights": (VRWKVLoadWeights, "VRWKV Load Weights"),
    "VRWKVTuneOnVideo": (VRWKVTuneOnVideo, "VRWKV Tune On Video"),
    "VRWKVDDIMInversion": (VRWKVDDIMInversion, "VRWKV DDIM Inversion"),
    "VRWKVKSampler": (VRWKVKSampler, "VRWKV KSampler (DDIM)"),
    "VRWKVSamplerDDIM": (VRWKVSamplerDDIM, "VRWKV Sampler (DDIM)"),
    "VRWKVVideoCoherence": (VRWKVVideoCoherence, "VRWKV Video Coherence"),
    "VRWKVContextWindows": (VRWKVContextWindows, "VRWKV Context Windows"),
}

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODE_CLASSES.items()}
