"""VRWKV Tune On Video: one-shot tuning of a patched SD1.5 MODEL on the clip's frames. The
node reads its widgets and runs the steps of nodes/trainer.py in order; the input MODEL is
never changed."""

import torch

from ..vrwkv.config import BlockConfig
from ..vrwkv.tuning import BLOCK_LR_MULTIPLIER, TEMPORAL_LR_MULTIPLIER, TuneSettings, param_groups, step_frames
from .common import CATEGORY, MEMORY_KNOBS, check_conditioning_batch, find_patch, frames_and_size
from .plots import as_image_tensor, loss_curve
from .sampling import require_eps_model
from .trainer import (TuneSampler, clip_latents, finish, keeping_completed_steps, prepare_trainer, progress_reporter,
                      run_tuning, training_record, tunable_copy)
from .weights import save_patch

TRAINABLE = ("vrwkv", "vrwkv+attn_q")
DTYPES = ("auto", "bfloat16", "float32")
NODE = "VRWKV Tune On Video"


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on GPUs that have it, float32 elsewhere."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if choice == "auto":
        return torch.bfloat16 if bf16_gpu else torch.float32
    if choice == "bfloat16" and device.type == "cuda" and not bf16_gpu:
        raise ValueError(f"{NODE}: this GPU has no bfloat16; set training_dtype to float32 (or auto)")
    return torch.bfloat16 if choice == "bfloat16" else torch.float32


MID_PLACEMENT_KNOB = ("set placement to mid in VRWKV Patch Model: about a quarter of the default blocks' tuning "
                      "memory (half of Tune-A-Video's); they still learn the clip's motion, a little less closely")
LEAN_BLOCK_KNOB = ("use the lean block in VRWKV Patch Model (channel_mix none, projections rank 1/4, fused_rkv "
                   "on): a fraction of the paper's block's tuning memory, though it learns the clip's motion less")


def tuning_memory_knobs(gradient_checkpointing: bool, dtype: torch.dtype, trainable: str, device: torch.device,
                        window: int = 0, frames: int = 0, config: BlockConfig | None = None):
    """The settings that would lower tuning's memory, beginning with this node's own (config:
    the MODEL's blocks)."""
    knobs = [] if gradient_checkpointing else ["turn gradient_checkpointing on"]
    if frames > 16 and not 0 < window <= 16:
        knobs.append("set window to 16 (or fewer) frames per tuning step")
    if dtype == torch.float32 and resolve_dtype("auto", device) != torch.float32:
        knobs.append("set training_dtype to auto (bfloat16)")
    if trainable != TRAINABLE[0]:
        knobs.append(f"set trainable to {TRAINABLE[0]}")
    if config is not None and config.placement != "mid":
        knobs.append(MID_PLACEMENT_KNOB)
    if config is not None and (config.channel_mix > 0 or config.rank is None):
        knobs.append(LEAN_BLOCK_KNOB)
    return knobs + list(MEMORY_KNOBS)


class VRWKVTuneOnVideo:
    DESCRIPTION = ("Tunes a VRWKV-patched SD1.5 model on one clip with its source prompt (Tune-A-Video's "
                   "recipe: all frames (or a random window of them) in every step, a random timestep per step, "
                   "noise-prediction MSE, AdamW). "
                   "Cancel keeps the steps done so far (saved if a name is given). Returns a new MODEL; the "
                   "input MODEL is unchanged.")
    CATEGORY = CATEGORY
    FUNCTION = "tune"
    OUTPUT_NODE = True
    RETURN_TYPES = ("MODEL", "IMAGE", "STRING")
    RETURN_NAMES = ("model", "loss_curve", "path")
    OUTPUT_TOOLTIPS = ("The tuned model: sample it with the edit prompt (after VRWKV DDIM Inversion of the clip).",
                       "Loss per step (raw, and its running mean in orange).",
                       "Path of the saved weights file, or empty if no save name was given.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 MODEL with VRWKV blocks (from VRWKV Patch Model)."}),
                "latent": ("LATENT", {"tooltip": "The clip's frames encoded by VAE Encode (one frame per batch "
                                                 "item); all frames (or a window of them) are trained together "
                                                 "in every step."}),
                "conditioning": ("CONDITIONING", {"tooltip": "The source prompt describing the clip as it is "
                                                             "(e.g. 'a man skiing'), one for all frames."}),
                "steps": ("INT", {"default": TuneSettings.steps, "min": 1, "max": 5000, "tooltip":
                          "Tuning steps. 500 as in Tune-A-Video's recipe (the paper tunes 300-500). Fewer "
                          "keep more freedom for style edits but learn less of the clip's motion: at 300 "
                          "the blocks barely learn a 16-frame clip's."}),
                "learning_rate": ("FLOAT", {"default": TuneSettings.lr, "min": 1e-7, "max": 1e-2, "step": 1e-6, "round": False,
                                            "tooltip": "AdamW learning rate (Tune-A-Video's recipe: 3e-5, too little for the "
                                                       "blocks to learn the clip's motion), used as is for the "
                                                       "query projections (trainable vrwkv+attn_q). The VRWKV blocks are "
                                                       f"new layers and learn at {BLOCK_LR_MULTIPLIER:g}x this, their "
                                                       f"temporal parameters (mu, decay, first) at "
                                                       f"{TEMPORAL_LR_MULTIPLIER:g}x without weight decay, so they move "
                                                       "within the run."}),
                "seed": ("INT", {"default": 33, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": False,
                         "tooltip": "Seed of the timesteps, noise and windows drawn in each step: the same seed "
                                    "tunes the same way, so a queued workflow tunes again only when an input "
                                    "changes. Change it by hand for another run."}),
                "trainable": (list(TRAINABLE), {"default": "vrwkv", "tooltip":
                              "What is tuned: the VRWKV blocks only, or also the query projections of every "
                              "self- and cross-attention (as Tune-A-Video does; more faithful, more memory)."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip":
                                           "Recompute activations in the backward pass: much less memory for "
                                           "long clips, about a third more time per step."}),
                "training_dtype": (list(DTYPES), {"default": "auto", "tooltip":
                                   "Precision of the model during tuning: auto = bfloat16 on GPUs, float32 on the "
                                   "CPU. Weights of the new blocks are always kept in float32."}),
            },
            "optional": {
                "save_name": ("STRING", {"default": "", "tooltip":
                              "If set, the tuned weights are saved to models/vrwkv/<name>.safetensors (also when "
                              "the run is cancelled or diverges: the last good steps are kept)."}),
                "note": ("STRING", {"default": "", "tooltip": "Text stored in the weights file's metadata, e.g. "
                                                              "the source prompt."}),
                "window": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                           "Frames per tuning step: each step tunes on a random contiguous window of this many "
                           "frames, so tuning memory is bounded by the window, not the clip (long clips). 0 = "
                           "all frames. The blocks' decay is divided by this length (stored with the weights "
                           "as norm_frames), so it means the same on the whole clip and in context windows. "
                           "Re-tuning a tuned model keeps the length it was first tuned with, whatever this "
                           "window, so its decay keeps its meaning."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def tune(self, model, latent, conditioning, steps, learning_rate, seed, trainable, gradient_checkpointing,
             training_dtype, save_name="", note="", window=0, unique_id=None):
        import comfy.model_management
        samples = clip_latents(latent, NODE)
        frames = samples.shape[0]
        require_eps_model(model, NODE)
        check_conditioning_batch(conditioning, frames, "source prompt")
        device = comfy.model_management.get_torch_device()
        dtype = resolve_dtype(training_dtype, device)
        settings = TuneSettings(steps=steps, lr=learning_rate, seed=seed)
        info = training_record(samples, window, settings, trainable, dtype, note)
        source = find_patch(model)
        knobs = tuning_memory_knobs(gradient_checkpointing, dtype, trainable, device, window, frames,
                                    BlockConfig.from_spec(source.blocks.spec) if source else None)

        with torch.inference_mode(False):
            tuned, patch = tunable_copy(model, NODE, norm_frames=step_frames(frames, window))
            trainer, deltas = prepare_trainer(tuned, patch.blocks, trainable == TRAINABLE[1],
                                              gradient_checkpointing, dtype)
            params = param_groups(patch.blocks.named_parameters(), settings, pretrained=deltas.values())
            sampler = TuneSampler(params, settings, dtype, progress_reporter(steps, unique_id), window)
            with keeping_completed_steps(tuned, sampler, save_name, NODE, frames_and_size(samples), knobs):
                try:
                    run_tuning(trainer, sampler, samples, conditioning, seed)
                finally:
                    finish(tuned, patch, deltas, info, sampler)

        path = save_patch(tuned, save_name, NODE) if save_name.strip() else ""
        image = as_image_tensor(loss_curve(sampler.losses))
        return {"ui": {"text": [path] if path else []}, "result": (tuned, image, path)}
