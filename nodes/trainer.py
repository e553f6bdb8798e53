"""The training mechanics behind VRWKV Tune On Video: the tunable copy of the MODEL, the
trainer clone the steps run through, the sampler object that runs the loop (vrwkv/tuning.py)
inside ComfyUI's sampling machinery, progress reporting, and keeping the completed steps
when a run stops early.

The loop runs as core's training node does: a guider with the source prompt loads the model
and prepares the conditioning, and a sampler object runs the steps, calling the model
through the guider, so every patch, wrapper and weight patch of the MODEL applies. Training
happens on a throw-away clone (checkpointing object patches, trainable weight wrappers); the
returned MODEL is another clone carrying its own copy of the VRWKV blocks and the tuned query
weights as ordinary weight patches, so the input MODEL is never changed.
"""

import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..vrwkv.tuning import NonFiniteLoss, draw_window, epsilon_loss, step_frames, tune
from .common import is_out_of_memory, log, out_of_memory, replace_patch, require_patch, show_on_node
from .plots import loss_curve
from .weights import save_patch


def clip_latents(latent: dict, node: str) -> torch.Tensor:
    """The clip's latent frames (frames, 4, h, w), or ValueError saying what to connect."""
    samples = latent["samples"]
    if samples.ndim != 4 or samples.shape[1] != 4:
        raise ValueError(f"{node}: expected SD1.5 latents of shape (frames, 4, h, w) from VAE Encode, got "
                         f"{tuple(samples.shape)}; encode the frames with the SD1.5 checkpoint's VAE")
    if not torch.count_nonzero(samples):
        raise ValueError(f"{node}: the latent is all zeros (an empty latent?); connect the VAE Encode output "
                         "of the clip's frames")
    return samples


def training_record(samples, window: int, settings, trainable: str, dtype: torch.dtype, note: str) -> dict:
    """What the weights file records of a tuning run (its `info`)."""
    return {"frames": samples.shape[0], "window": window, "height": samples.shape[2] * 8,
            "width": samples.shape[3] * 8, "steps": settings.steps, "lr": settings.lr, "seed": settings.seed,
            "temporal_lr_multiplier": settings.temporal_lr_multiplier,
            "block_lr_multiplier": settings.block_lr_multiplier, "trainable": trainable,
            "training_dtype": str(dtype).replace("torch.", ""), "note": note}


def tunable_copy(model, node: str, norm_frames: int):
    """(clone of the MODEL, its VRWKV patch): the clone carries its own trainable copy of the
    blocks, so the input MODEL keeps its own. Blocks tuned before keep the length their decay
    is divided by; others get `norm_frames`."""
    tuned = model.clone()
    source = require_patch(model, node)
    patch = source.copy()
    replace_patch(tuned, source, patch)
    for p in patch.blocks.parameters():
        p.requires_grad_(True)
    if patch.blocks.spec.get("norm_frames") is None:
        patch.blocks.set_norm_frames(norm_frames)
    return tuned, patch


def prepare_trainer(tuned, blocks, tune_queries: bool, gradient_checkpointing: bool, dtype: torch.dtype):
    """(trainer, query deltas by model key): a throw-away clone of `tuned` loaded for training:
    with `tune_queries` every attention query projection gets a trainable float32 delta; with
    `gradient_checkpointing` the blocks, ResBlocks and transformers recompute in backward; the
    UNet computes in `dtype` (as core's trainer: float32 means float32)."""
    import comfy.model_management
    import comfy.utils
    trainer = tuned.clone()
    unet = trainer.get_model_object("diffusion_model")
    deltas = {}
    if tune_queries:
        for key in query_weight_keys(unet):
            wrapper = QueryDelta(comfy.utils.get_attr(trainer.model, key))
            trainer.add_weight_wrapper(key, wrapper)
            module = key[:-len(".weight")]
            trainer.add_object_patch(f"{module}.forward", float32_projection(comfy.utils.get_attr(trainer.model, module)))
            deltas[key] = wrapper.delta
    if gradient_checkpointing:
        blocks.set_gradient_checkpointing(True)
        for key, fn in checkpoint_patches(unet).items():
            trainer.add_object_patch(key, fn)
    trainer.set_model_compute_dtype(dtype)
    comfy.model_management.load_models_gpu([trainer], memory_required=1e20, force_full_load=True)
    return trainer, deltas


def progress_reporter(steps: int, node_id):
    """on_step(step, losses) for TuneSampler: ComfyUI's progress bar (which also honours its
    interrupt) with a live loss curve, and about 25 log lines / node texts with the recent loss
    and seconds per step."""
    import comfy.utils
    pbar = comfy.utils.ProgressBar(steps, node_id=node_id)
    every = max(1, steps // 25)
    clock = [time.perf_counter()]

    def on_step(step, losses):
        report = step % every == 0 or step == steps
        pbar.update_absolute(step, steps, ("PNG", loss_curve(losses), 512) if report else None)
        if report:
            recent = losses[-every:]
            now = time.perf_counter()
            status = (f"step {step}/{steps}, loss {sum(recent) / len(recent):.4f}, "
                      f"{(now - clock[0]) / len(recent):.2f} s/step")
            clock[0] = now
            log.info(f"VRWKV tuning: {status}")
            show_on_node(node_id, status)
    return on_step


class QueryDelta(torch.nn.Module):
    """Weight wrapper W -> W + delta with a trainable delta (starts at 0), added in float32:
    in the weight's half-precision dtype a delta below half its step (about 2e-3 of W in
    bfloat16, 2.5e-4 in float16) would round away. The projection then runs in float32
    (`float32_projection`)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.delta = torch.nn.Parameter(torch.zeros(weight.shape, dtype=torch.float32, device=weight.device))

    def __call__(self, weight):
        return weight.float() + self.delta

    def move_to(self, device):
        """Called by ModelPatcher when the model moves; returns the bytes moved."""
        self.to(device=device)
        return self.delta.numel() * self.delta.element_size()


def float32_projection(linear):
    """A forward for a ComfyUI Linear that computes in float32 (its weight, with the weight
    wrappers applied, cast to float32) and returns the input's dtype, so that a tuned query
    delta counts in full even when the UNet computes in half precision."""
    import comfy.ops

    def forward(x):
        with torch.autocast(x.device.type, enabled=False):
            weight, bias = comfy.ops.cast_bias_weight(linear, x, dtype=torch.float32)
            return F.linear(x.float(), weight, bias).to(x.dtype)
    return forward


def compose_deltas(earlier: dict, new: dict) -> dict:
    """Differences from the checkpoint of a model tuned again: earlier + new, key by key."""
    return {k: earlier.get(k, 0) + new.get(k, 0) for k in {**earlier, **new}}


def query_weight_keys(unet) -> list[str]:
    """Model keys of the self- and cross-attention query projections (Tune-A-Video's set)."""
    return [f"diffusion_model.{name}.weight" for name, _ in unet.named_modules()
            if name.endswith(("attn1.to_q", "attn2.to_q"))]


def checkpointed(forward):
    """`forward` recomputed in backward. ComfyUI's UNet keeps rewriting the transformer_options
    dict it passes down ("block", "block_index"), so the recomputation gets a copy taken at the
    call: patches looked up by block (attn1 replacements, middle patches) see their own block."""
    def run(*args, **kwargs):
        if torch.is_grad_enabled():
            args = [dict(a) if isinstance(a, dict) else a for a in args]
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)
    return run


def checkpoint_patches(unet) -> dict:
    """Object patches that recompute each ResBlock and SpatialTransformer in backward."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    return {f"diffusion_model.{name}.forward": checkpointed(m.forward)
            for name, m in unet.named_modules() if isinstance(m, (ResBlock, SpatialTransformer))}


def without_inference_tensors(module: torch.nn.Module) -> None:
    """ComfyUI loads weights under inference mode; autograd cannot save such tensors for
    backward, so they are replaced by equal ordinary tensors (values unchanged)."""
    for m in module.modules():
        for table in (m._parameters, m._buffers):
            for name, t in table.items():
                if t is not None and t.is_inference():
                    table[name] = torch.nn.Parameter(t.clone(), requires_grad=False) if name in m._parameters else t.clone()


def window_conds(conds: dict, frames: int, start: int, end: int) -> dict:
    """A guider's processed conds cut to frames [start, end): every per-frame tensor (batch
    `frames`) of an entry (masks, ...) and of its model_conds (the prompt), and the hints of
    its ControlNets, in copies of the control chain (ComfyUI would otherwise cut a longer
    batch to its first frames). The copies need pre_run before use, as the guider's had."""
    def cut(t):
        return t[start:end] if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == frames else t

    def cut_cond(c):
        fits = isinstance(getattr(c, "cond", None), torch.Tensor) and c.cond.shape[0] == frames
        return c._copy_with(c.cond[start:end]) if fits else c

    def cut_control(control):
        copy = control.copy()          # ComfyUI copies a control's settings, not its chain
        copy.cond_hint_original = cut(control.cond_hint_original)
        copy.extra_concat_orig = [cut(t) for t in control.extra_concat_orig]
        if control.previous_controlnet is not None:
            copy.set_previous_controlnet(cut_control(control.previous_controlnet))
        return copy

    def cut_entry(entry):
        out = {k: cut(v) for k, v in entry.items()}
        out["model_conds"] = {k: cut_cond(c) for k, c in entry.get("model_conds", {}).items()}
        if entry.get("control") is not None:
            out["control"] = cut_control(entry["control"])
        return out
    return {name: [cut_entry(entry) for entry in entries] for name, entries in conds.items()}


class TuneSampler:
    """Duck-typed comfy.samplers.Sampler whose sample() runs the tuning loop; with a `window`
    each step tunes on a random contiguous window of that many frames."""

    def __init__(self, params, settings, dtype, on_step, window: int = 0):
        self.params, self.settings, self.dtype, self.on_step = params, settings, dtype, on_step
        self.window = window
        self.losses = []
        self.unet_dtype = None          # the dtype the UNet computed in (its output convolution's)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        import comfy.samplers
        without_inference_tensors(model_wrap.inner_model)
        for control in (e["control"] for entries in model_wrap.conds.values() for e in entries if e.get("control")):
            for patcher in control.get_models():       # a ControlNet on the prompt runs inside the graph too
                without_inference_tensors(patcher.model)
        x0 = latent_image.clone()

        def denoise(x, sigma):
            with torch.autocast(x0.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                return model_wrap(x, sigma, **extra_args)

        conds, frames = model_wrap.conds, x0.shape[0]

        def step_loss(generator):
            start = draw_window(generator, frames, self.window)
            end = start + step_frames(frames, self.window)
            if end - start < frames:
                model_wrap.conds = window_conds(conds, frames, start, end)
                for entries in model_wrap.conds.values():
                    comfy.samplers.pre_run_control(model_wrap.inner_model, entries)
            return epsilon_loss(denoise, x0[start:end], model_wrap.inner_model.model_sampling.sigmas, generator)

        def on_step(step, loss):
            self.losses.append(loss)
            self.on_step(step, self.losses)

        def record_dtype(module, args, output):
            self.unet_dtype = output.dtype

        hook = model_wrap.inner_model.diffusion_model.out.register_forward_hook(record_dtype)
        try:
            tune(self.params, step_loss, self.settings, on_step)
        finally:
            hook.remove()
            model_wrap.conds = conds
        return torch.zeros_like(latent_image)


def run_tuning(trainer, sampler: TuneSampler, samples, conditioning, seed: int) -> None:
    """Runs `sampler` (its tuning loop) on the loaded `trainer` through ComfyUI's guider with
    the source prompt, so every patch and wrapper of the MODEL applies."""
    import comfy.samplers
    guider = comfy.samplers.CFGGuider(trainer)
    guider.inner_set_conds({"positive": [[c[0].clone(), dict(c[1])] for c in conditioning]})
    guider.sample(torch.zeros_like(samples), samples.clone(), sampler, torch.tensor([1.0, 0.0]), seed=seed)


def finish(tuned, patch, deltas: dict, info: dict, sampler: TuneSampler) -> None:
    """Freezes the tuned state into the output MODEL: blocks, query deltas as weight patches,
    the training record."""
    patch.blocks.set_gradient_checkpointing(False)
    for p in patch.blocks.parameters():
        p.requires_grad_(False)
    new = {k: d.detach().float().cpu() for k, d in deltas.items()}
    if new:
        tuned.add_patches({k: (d,) for k, d in new.items()}, 1.0, 1.0)
    # The input MODEL's own differences (a re-tuned model) stay applied, so the file keeps them
    # too: the sum of every run's differences from the checkpoint.
    patch.base_deltas = compose_deltas(patch.base_deltas, new)
    losses, computed = sampler.losses, sampler.unet_dtype
    patch.info = {**info, "steps_done": len(losses), "final_loss": losses[-1] if losses else None,
                  "unet_compute_dtype": str(computed).replace("torch.", "") if computed else None}


@contextmanager
def keeping_completed_steps(tuned, sampler: TuneSampler, save_name: str, node: str, what: str, knobs):
    """Around a tuning run whose result is already frozen into `tuned` when it stops: a run
    stopped early (cancel, divergence, out of memory, any error) saves its completed steps
    under `save_name` (if given) and says so; a diverged run's error names the node, and out of
    memory while tuning on `what` lists the settings (`knobs`) that need less."""
    try:
        yield
    except BaseException as e:
        saved = ""
        if save_name.strip() and sampler.losses:
            path = save_patch(tuned, save_name, node)
            saved = f"; the weights of the {len(sampler.losses)} completed steps were saved to {path}"
            log.warning(f"VRWKV tuning stopped at step {len(sampler.losses)} ({type(e).__name__}){saved}")
        if isinstance(e, NonFiniteLoss):
            raise NonFiniteLoss(f"{node}: {e}") from None
        if is_out_of_memory(e):
            raise out_of_memory(node, f"tuning on {what}{saved}", knobs) from e
        raise
