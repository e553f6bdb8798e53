"""Helpers beside the pack: load_pack (the pack as ComfyUI imports it), the ComfyUI server and
browser drivers of the integration tier, the workflow builder, the Triton checks."""
