"""A small diffusion world of our own: synthetic scenes and clips (world), a detector that reads
them back (detector), a tiny text encoder and ComfyUI-layout UNet (text, unet), the model and
the ComfyUI-side call around it (model), its training script (train)."""
