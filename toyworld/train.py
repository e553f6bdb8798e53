"""Trains the toy text-to-image model on single frames of the toy world (as SD1.5 is an image
model), deterministic from a seed and resumable.

    python -m toyworld.train --out toyworld/weights/toy_unet.safetensors

MSE on v (unet.ToyUNet) on SD1.5's schedule; AdamW with warm-up and cosine decay; an EMA of
the weights, which is what is evaluated and saved; a `--drop` share of captions emptied for
CFG and half without the size word. Each evaluation samples images with the pack's DDIM and
scores the share the detector reads with the prompted colour and shape (adherence), then
atomically writes the fp16 weights with their training record and the resume state
`<out>.resume.pt` (not committed). Stops when adherence reaches `--target` twice in a row,
or at `--steps`.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from tools.load_pack import load_pack

from .detector import detect
from .model import Guided, ToyModel, save_model
from .world import random_specs, render

load_pack()
from vrwkv_editor.vrwkv.ddim import ddim_sigmas, sample_ddim  # noqa: E402


def batch(step: int, seed: int, size: int, model: ToyModel, drop: float):
    """Noised images, their v target, timesteps and captions of one step, drawn from (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    specs = random_specs(g, size)
    x0 = torch.stack([render(s) for s in specs])
    with_size = torch.rand(size, generator=g) < 0.5
    dropped = torch.rand(size, generator=g) < drop
    captions = ["" if d else s.caption(bool(w)) for s, w, d in zip(specs, with_size, dropped)]
    t = torch.randint(0, 1000, (size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    a = model.alphas_cumprod[t][:, None, None, None]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, a.sqrt() * noise - (1 - a).sqrt() * x0, t, captions


@torch.no_grad()
def generate(model: ToyModel, captions: list, seed: int, steps: int = 25, guidance: float = 4.0):
    """Images for captions, one per caption, sampled with the pack's DDIM from seeded noise."""
    sigmas = ddim_sigmas(model.sigmas, steps)
    noise = torch.cat([torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed + i))
                       for i in range(len(captions))])
    guided = Guided(model, model.text(captions), model.text([""]), guidance)
    return sample_ddim(guided, noise * sigmas[0], sigmas)


@torch.no_grad()
def adherence(model: ToyModel, samples: int, guidance: float, seed: int = 12345) -> float:
    """Share of sampled images whose detected colour and shape match the caption."""
    specs = random_specs(torch.Generator().manual_seed(seed), samples)
    captions = [s.caption(i % 2 == 0) for i, s in enumerate(specs)]
    images = generate(model, captions, seed, guidance=guidance)
    hits = 0
    for spec, image in zip(specs, images):
        d = detect(image)
        hits += d.colour == spec.colour and d.shape == spec.shape
    return hits / samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="weights file (.safetensors) to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=800, help="step budget")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--drop", type=float, default=0.1, help="share of captions dropped (CFG)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-samples", type=int, default=32)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--mult", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1,
                   help="1 is fastest on a shared 2-core machine (2 threads thrash under contention)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    resume = out.with_name(out.name + ".resume.pt")
    command = "python -m toyworld.train " + " ".join(sys.argv[1:] if argv is None else argv)

    torch.manual_seed(args.seed)
    model = ToyModel({"base": args.base, "mult": tuple(args.mult), "attention_levels": (1, 2)})
    ema = ToyModel(model.config()["unet"]).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start, history = 0, []
    if resume.exists():
        state = torch.load(resume, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, history = state["step"], state["history"]
        print(f"resumed at step {start}", flush=True)
    params = sum(p.numel() for p in model.unet.parameters())
    print(f"UNet {params / 1e6:.2f} M parameters, config {json.dumps(model.config())}", flush=True)

    losses, t0 = [], time.time()
    for step in range(start + 1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        xt, v, t, captions = batch(step, args.seed, args.batch, model, args.drop)
        loss = (model.unet.forward_v(xt, t, model.text(captions)) - v).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for e, m in zip(ema.parameters(), model.parameters()):
                e.lerp_(m, 1 - decay)
        losses.append(loss.item())
        if step % 25 == 0:
            print(f"step {step} loss {sum(losses[-25:]) / 25:.4f} lr {lr:.2e} "
                  f"{(time.time() - t0) / len(losses):.2f} s/step", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            ema.eval()
            score = adherence(ema, args.eval_samples, args.guidance)
            history.append({"step": step, "loss": round(sum(losses[-100:]) / len(losses[-100:]), 5),
                            "adherence": score})
            print(f"eval step {step}: adherence {score:.3f}", flush=True)
            save_model(ema, out, {"step": str(step), "seed": str(args.seed), "history": history,
                                  "command": command, "guidance": str(args.guidance), "eval_samples":
                                  str(args.eval_samples)})
            tmp = resume.with_name(resume.name + ".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step, "history": history}, tmp)
            os.replace(tmp, resume)
            if len(history) >= 2 and min(h["adherence"] for h in history[-2:]) >= args.target:
                print("target adherence reached twice: stopping", flush=True)
                break


if __name__ == "__main__":
    main()
