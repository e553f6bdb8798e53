"""What VRWKV Patch Model adds to SD1.5: parameters per option, and time per UNet call
patched vs unpatched (CFG batch: 2 videos of T frames), side by side in one run.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.unet_patch_cost [--frames 8 32] [--sizes 8]

Needs ComfyUI (the real UNet and ModelPatcher); writes bench/results/unet_patch_cost_<device>.md.
"""

import argparse
import time
from pathlib import Path

import torch

from . import machine_name
from .comfy_model import load_pack_in_comfy, random_sd15

RESULTS = Path(__file__).resolve().parent / "results"


def unet_call(model, frames, size, repeats):
    """Median seconds of one apply_model call on 2 videos (uncond + cond) of `frames` frames."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    device = model.load_device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * frames, 4, size, size, generator=g).to(device)
    sigma = torch.full((2 * frames,), 1.0, device=device)
    context = torch.randn(2 * frames, 77, 768, generator=g).to(device)
    opts = {**model.model_options["transformer_options"], "cond_or_uncond": [1, 0]}
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=opts)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    times = sorted(times[1:])                      # first call warms up
    return times[len(times) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8], help="latent sizes (pixels / 8)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    base = random_sd15("full")
    pack = load_pack_in_comfy()
    from vrwkv_editor.nodes.common import find_patch
    from vrwkv_editor.vrwkv.config import PLACEMENTS
    from vrwkv_editor.vrwkv.layout import LEVEL_CHOICES
    patch_node = pack.NODE_CLASS_MAPPINGS["VRWKVPatchModel"]()
    device = base.load_device.type
    unet_params = sum(p.numel() for p in base.model.diffusion_model.parameters())
    lines = [f"# VRWKV Patch Model on SD1.5: {machine_name(device)}", "",
             f"## Added parameters (full SD1.5 UNet: {unet_params / 1e6:.1f} M parameters)", "",
             "| placement | resolution | blocks | parameters |",
             "|---|---|---|---|"]
    with torch.inference_mode():
        for placement in PLACEMENTS:
            for resolution in LEVEL_CHOICES:
                try:
                    patched, = patch_node.patch(base, placement, resolution)
                except ValueError as e:
                    lines.append(f"| {placement} | {resolution} | - | {e} |")
                    continue
                blocks = find_patch(patched).blocks
                n = sum(p.numel() for p in blocks.parameters())
                lines.append(f"| {placement} | {resolution} | {len(blocks.blocks)} | {n / 1e6:.1f} M |")
        patched, = patch_node.patch(base, "skip+mid", "all")
    lines += ["", "## Time per UNet call (forward, 2 videos for CFG, default placement skip+mid, all levels)", "",
              "| frames | latent | unpatched (s) | patched (s) | patched / unpatched |", "|---|---|---|---|---|"]
    for size in args.sizes:
        for frames in args.frames:
            plain = unet_call(base, frames, size, args.repeats)
            ours = unet_call(patched, frames, size, args.repeats)
            lines.append(f"| {frames} | {size}x{size} | {plain:.3f} | {ours:.3f} | {ours / plain:.2f}x |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"unet_patch_cost_{device}.md").write_text(text)


if __name__ == "__main__":
    main()
