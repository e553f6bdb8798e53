"""The toy world: a small text-to-image diffusion world of our own, so edits can be measured
without SD1.5 weights. Scenes and clips (world), a detector that reads them back (detector,
fidelity), a tiny text encoder and ComfyUI-layout UNet (text, unet), the model and the
ComfyUI-side call around it (model), its training (train), one edit through the pack
(pipeline) and the main command's toy edit (edit_demo)."""
