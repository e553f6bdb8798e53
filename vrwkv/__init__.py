"""nn.Modules, UNet patch logic, DDIM math and the tuning loop: torch, einops and
../kernels only, nothing ComfyUI-aware."""
