"""Run under ComfyUI's Python by test_tune_a_video_comfy.py: the Tune-A-Video baseline on
ComfyUI's real SD1.5 UNetModel (random weights, full topology). Prints one JSON line."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.comfy_model import random_sd15  # noqa: E402
from baselines.tune_a_video import tune_a_video_comfy, tune_in_comfy  # noqa: E402

FRAMES = 4


def main():
    base = random_sd15("full")
    import comfy.ldm.modules.attention
    import comfy.sample
    unet = base.get_model_object("diffusion_model")
    tav, trainer, params = tune_a_video_comfy(base)
    model = tav.apply(base)

    seen, shapes = set(), set()
    spy = lambda x, extra: seen.add((*extra["block"], extra["block_index"])) or x   # noqa: E731
    model.set_model_patch(spy, "middle_patch")
    for name, table in (("sparse-causal", tav.sparse_causal), ("temporal", tav.temporal)):
        def counted(q, k, v, heads, _inner=table.attention, _name=name, **kw):
            shapes.add((_name, q.shape[1], k.shape[1]))
            return _inner(q, k, v, heads, **kw)
        table.attention = counted

    g = torch.Generator().manual_seed(0)
    latent = torch.randn(FRAMES, 4, 8, 8, generator=g)
    pos, neg = ([[torch.randn(1, 77, 768, generator=g), {}]] for _ in range(2))
    with torch.inference_mode():
        out = comfy.sample.sample(model, torch.randn(latent.shape, generator=g), 1, 5.0, "euler", "normal", pos, neg,
                                  latent, denoise=1.0, seed=1)
    before = [p.detach().clone() for p in params]
    losses = tune_in_comfy(trainer, params, latent, pos, steps=2, lr=1e-3)
    moved = [not torch.equal(b, p.detach().cpu()) for b, p in zip(before, params)]
    blocks = [n for n, m in unet.named_modules() if isinstance(m, comfy.ldm.modules.attention.BasicTransformerBlock)]
    print(json.dumps({
        "transformer_blocks": len(blocks), "keys": [list(k) for k in tav.keys],
        "attn1_replaced": len(model.model_options["transformer_options"]["patches_replace"]["attn1"]),
        "called": [list(k) for k in sorted(seen)], "attention_shapes": sorted(map(list, shapes)),
        "finite": bool(torch.isfinite(out).all()), "shape": list(out.shape),
        "losses": losses, "params": len(params), "moved": sum(moved),
    }))


if __name__ == "__main__":
    main()
