"""nn.Modules, UNet patch logic, DDIM math and the tuning loop. Imports torch, einops and
../kernels only: nothing here knows about ComfyUI."""
