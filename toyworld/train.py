"""Trains the toy text-to-image model on single frames of a toy world (as SD1.5 is an image
model), deterministic from a seed and resumable.

    python -m toyworld.train [--world flat|textured] --out toyworld/weights/<file>.safetensors
    python -m toyworld.train --evaluate toyworld/weights/<file>.safetensors

MSE on v (unet.ToyUNet) on SD1.5's schedule; AdamW with warm-up and cosine decay; an EMA of
the weights, which is what is evaluated and saved; a `--drop` share of captions emptied for
CFG and (flat world) half without the size word. Each evaluation samples images with the
pack's DDIM and scores the share the world's detector reads with the prompted colour and
shape (adherence), then atomically replaces the run's fp16 weights with their training
record and writes the resume state `<out>.resume.pt` (not committed); a fresh run refuses an
existing file. Stops when adherence reaches `--target` twice in a row, or at `--steps`.
`--evaluate FILE` measures a file's adherence on held-out seeds.
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

from .model import Guided, ToyModel, load_model, save_model
from .worlds import WORLDS, World, get_world

load_pack()
from vrwkv_editor.vrwkv.ddim import ddim_sigmas, sample_ddim  # noqa: E402


def batch(step: int, seed: int, size: int, model: ToyModel, drop: float, world: World):
    """Noised images, their v target, timesteps and captions of one step, drawn from (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    specs = world.random_specs(g, size)
    x0 = torch.stack([world.render(s) for s in specs])
    full = torch.rand(size, generator=g) < 0.5
    dropped = torch.rand(size, generator=g) < drop
    captions = ["" if d else world.caption(s, bool(f)) for s, f, d in zip(specs, full, dropped)]
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
    """Share of sampled images (captions and noise drawn from `seed`) whose detected named
    attributes (colour and shape) match the caption."""
    world = get_world(model.world)
    specs = world.random_specs(torch.Generator().manual_seed(seed), samples)
    captions = [world.caption(s, i % 2 == 0) for i, s in enumerate(specs)]
    images = generate(model, captions, seed, guidance=guidance)
    return sum(world.adheres(spec, image) for spec, image in zip(specs, images)) / samples


def evaluate(path: Path, seeds: list, samples: int, guidance: float) -> float:
    """A weights file's adherence over `samples` images from each seed; prints each seed's share."""
    model, meta = load_model(path)
    scores = [adherence(model, samples, guidance, seed) for seed in seeds]
    for seed, score in zip(seeds, scores):
        print(f"seed {seed}: adherence {score:.3f} ({round(score * samples)}/{samples})", flush=True)
    total = sum(scores) / len(scores)
    print(f"{path} ({model.world} world, step {meta.get('step')}): adherence {total:.3f} "
          f"({round(total * samples * len(seeds))}/{samples * len(seeds)}) at guidance {guidance}", flush=True)
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="weights file (.safetensors) to write")
    p.add_argument("--world", choices=list(WORLDS), default="flat")
    p.add_argument("--evaluate", type=Path, metavar="FILE", help="only measure FILE's adherence on held-out seeds")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[1001, 2002, 3003])
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
    p.add_argument("--attention-levels", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1,
                   help="1 is fastest on a shared 2-core machine (2 threads thrash under contention)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate(args.evaluate, args.eval_seeds, args.eval_samples, args.guidance)
    if args.out is None:
        p.error("--out is required (or --evaluate FILE)")
    world = get_world(args.world)
    out = args.out
    resume = out.with_name(out.name + ".resume.pt")
    command = "python -m toyworld.train " + " ".join(sys.argv[1:] if argv is None else argv)

    torch.manual_seed(args.seed)
    model = ToyModel({"base": args.base, "mult": tuple(args.mult), "attention_levels": tuple(args.attention_levels)},
                     world=world.name)
    ema = ToyModel(model.config()["unet"], world=world.name).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start, history = 0, []
    if resume.exists():
        state = torch.load(resume, weights_only=False)
        if state.get("config", model.config()) != model.config():
            raise ValueError(f"{resume} holds a run of another configuration ({state['config']}); give the same "
                             f"options as that run, or delete {resume} to start afresh")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, history = state["step"], state["history"]
        print(f"resumed at step {start}", flush=True)
    elif out.exists():
        raise FileExistsError(f"{out} exists and there is no {resume.name} to resume it from; choose another --out "
                              "or move the file away")
    params = sum(p.numel() for p in model.unet.parameters())
    print(f"UNet {params / 1e6:.2f} M parameters, config {json.dumps(model.config())}", flush=True)

    losses, t0 = [], time.time()
    for step in range(start + 1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        xt, v, t, captions = batch(step, args.seed, args.batch, model, args.drop, world)
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
                                  str(args.eval_samples)}, replace=True)
            tmp = resume.with_name(resume.name + ".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step, "history": history, "config": model.config()}, tmp)
            os.replace(tmp, resume)
            if len(history) >= 2 and min(h["adherence"] for h in history[-2:]) >= args.target:
                print("target adherence reached twice: stopping", flush=True)
                break


if __name__ == "__main__":
    main()
