"""ComfyUI nodes (V1 API): thin adapters from widgets to the plain functions in vrwkv/.

Node classes only declare their inputs here; anything that touches ComfyUI is imported
inside the functions that run, so the schemas load (and are tested) without ComfyUI.
"""

from .ddim import VRWKVDDIMInversion, VRWKVKSampler, VRWKVSamplerDDIM

NODE_CLASSES = {
    "VRWKVSamplerDDIM": (VRWKVSamplerDDIM, "VRWKV Sampler (DDIM)"),
    "VRWKVKSampler": (VRWKVKSampler, "VRWKV KSampler (DDIM)"),
    "VRWKVDDIMInversion": (VRWKVDDIMInversion, "VRWKV DDIM Inversion"),
}

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODE_CLASSES.items()}
