"""ComfyUI-VRWKV-Editor: one-shot text-driven video editing with bidirectional RWKV
(VRWKV-Editor, arXiv 2509.25998) for SD1.5 in ComfyUI.

ComfyUI imports this folder as a package under whatever name it has on disk; everything
inside uses relative imports, and nothing here imports ComfyUI at import time.
"""

# pytest imports this file as a plain module (no package) when it collects tests/ from a
# checkout whose folder name is not an identifier; there is nothing to register then.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .vrwkv.version import VERSION as __version__

    WEB_DIRECTORY = "./web"      # the page's side: old workflows of VRWKV Tune On Video load (web/tune_seed.js)
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
