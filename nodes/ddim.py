"""DDIM nodes: a SAMPLER for core's custom sampling, a KSampler that can start from an
inverted latent, and the inversion itself (Tune-A-Video's inference, any SD1.5 MODEL).

They sample through comfy.sample.sample_custom, so model patches, CFG, ControlNet and
ComfyUI's model loading all apply. Conventions: vrwkv/ddim.py (schedule, last step) and
vrwkv/inversion.py (the inverted LATENT).
"""

import os

from ..vrwkv.ddim import ddim_sigmas
from ..vrwkv.inversion import (LATENT_KEY, Inversion, check_saved, check_sigmas_match, inversion_of,
                               inversion_path, load_inversion, save_inversion)
from .common import check_conditioning_batch
from .sampling import ddim_sampler, run_ddim, sigma_table

CATEGORY = "VRWKV-Editor/sampling"
INVERSION_FOLDER = "vrwkv_inversions"
MODES = ["invert", "invert and save", "load saved"]

_SCHEDULE_NOTE = ("DDIM schedule of diffusers/Tune-A-Video (leading, steps_offset 1); the last step lands on "
                  "the model's smallest sigma (alphas_cumprod[0]), which counts as clean.")


ETA_INPUT = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                       "tooltip": "DDIM eta: 0 is deterministic DDIM, 1 adds DDPM-like fresh noise each step "
                                  "(seeded). Must be 0 when inverting."})


def _frames(samples, what):
    if samples.ndim != 4:
        raise ValueError(f"{what} must be an SD1.5 image latent batch (frames, 4, H/8, W/8), got shape "
                         f"{tuple(samples.shape)}: VAE-encode the frames as an image batch.")
    return samples.shape[0]


class VRWKVSamplerDDIM:
    DESCRIPTION = ("DDIM as a SAMPLER for core SamplerCustom / SamplerCustomAdvanced, with any scheduler. "
                   "Also inverts when given increasing sigmas (eta 0), e.g. from VRWKV DDIM Inversion's sigmas "
                   "flipped.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The DDIM sampler; eta > 0 draws its noise from the sampling node's seed.",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"eta": ETA_INPUT},
                "optional": {"edit": ("BOOLEAN", {"default": False, "tooltip":
                    "On when sampling from VRWKV DDIM Inversion's inverted_latent (an edit; add_noise off): "
                    "the VRWKV blocks then treat the clip's first frame as they did when inverting it. Off "
                    "when sampling from fresh noise. (Inverting with this sampler always counts as an edit.)"})}}

    def get_sampler(self, eta, edit=False):
        return (ddim_sampler(eta, edit=edit),)


class VRWKVKSampler:
    DESCRIPTION = ("KSampler with DDIM (" + _SCHEDULE_NOTE + ") and eta. Connect the LATENT of VRWKV DDIM "
                   "Inversion as inverted_latent to start from it instead of fresh noise: with the source "
                   "prompt at cfg 1 it regenerates the source clip; with an edit prompt it edits it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The sampled latent batch (one item per frame).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 model (patched or not) used for denoising."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Seed of the starting noise (unused with inverted_latent) and of "
                                            "eta's noise."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "DDIM steps (Tune-A-Video: 50). With inverted_latent, the steps it "
                                             "was inverted with."}),
                "cfg": ("FLOAT", {"default": 12.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (Tune-A-Video: 12.5 for edits; 1 "
                                             "with the source prompt reconstructs the source)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt to render: one for all frames or one "
                                                         "per frame."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt: one for all frames or one per "
                                                         "frame."}),
                "latent_image": ("LATENT", {"tooltip": "The latent batch to denoise (frames = batch). With "
                                                       "inverted_latent: the clip that was inverted."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Fraction of the schedule to run, as in core KSampler; 1.0 "
                                                 "with inverted_latent."}),
                "eta": ETA_INPUT,
            },
            "optional": {
                "inverted_latent": ("LATENT", {"tooltip": "Output of VRWKV DDIM Inversion: sampling starts "
                                                          "from it with no added noise."}),
            },
        }

    def sample(self, model, seed, steps, cfg, positive, negative, latent_image, denoise, eta, inverted_latent=None):
        import comfy.sample
        import torch

        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        frames = _frames(latent, "latent_image")
        check_conditioning_batch(positive, frames, "positive")
        check_conditioning_batch(negative, frames, "negative")
        sigmas = ddim_sigmas(sigma_table(model), steps, denoise)
        noise_mask = latent_image.get("noise_mask")
        if inverted_latent is None:
            start = latent
            noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        else:
            if noise_mask is not None:
                raise ValueError("latent_image has a noise mask, which would paste the inverted noise back "
                                 "outside the mask: remove the mask (e.g. use the VAE Encode output directly).")
            check_sigmas_match(inversion_of(inverted_latent, latent.shape), sigmas, steps, denoise)
            start = inverted_latent["samples"]
            noise = torch.zeros_like(start)
        samples = run_ddim("VRWKV KSampler (DDIM)", model, noise, start, sigmas, positive, negative, cfg, eta, seed,
                           noise_mask, edit=inverted_latent is not None)
        out = {k: v for k, v in latent_image.items() if k != LATENT_KEY}
        out["samples"] = samples
        return (out,)


class VRWKVDDIMInversion:
    DESCRIPTION = ("DDIM inversion (Tune-A-Video): walks the clean latents up the DDIM schedule to the noise "
                   "that regenerates them. " + _SCHEDULE_NOTE + " The clean latent starts at that smallest "
                   "sigma; the output LATENT holds the noisy latent at the first sampling sigma, divided by the "
                   "latent scale like any LATENT, plus the steps and sigmas (metadata). Feed it to VRWKV KSampler "
                   "(DDIM) with the same steps, or to SamplerCustom with add_noise off and the sigmas output: "
                   "with the same prompt at cfg 1 it regenerates the source. Optionally saved under output/"
                   + INVERSION_FOLDER + "/ so re-edits skip inversion.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT", "SIGMAS")
    RETURN_NAMES = ("inverted_latent", "sigmas")
    OUTPUT_TOOLTIPS = ("The inverted noise (with its DDIM metadata) for VRWKV KSampler (DDIM)'s inverted_latent.",
                       "The sampling sigmas that regenerate the clip from it (for SamplerCustom, add_noise off).")
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 model to invert with: the tuned one, the same you "
                                               "sample with."}),
                "latent": ("LATENT", {"tooltip": "The VAE-encoded source clip (frames = batch)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt to invert with (Tune-A-Video: the empty "
                                                         "prompt): one for all frames or one per frame."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "DDIM steps (Tune-A-Video: 50); sample with the same number."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance during inversion; 1 (none, Tune-A-Video's choice) needs "
                                             "no negative."}),
                "refine": ("INT", {"default": 0, "min": 0, "max": 50,
                                   "tooltip": "Fixed-point iterations per inversion step: 0 is Tune-A-Video's "
                                              "DDIM inversion; each one costs another model call per step and "
                                              "makes sampling back reproduce the source more exactly."}),
                "mode": (MODES, {"default": "invert",
                                 "tooltip": "invert: compute; invert and save: compute and write "
                                            "output/" + INVERSION_FOLDER + "/<save_name>.safetensors (or "
                                            "<save_name>_00001... if taken); load "
                                            "saved: read that file (checked against this clip and settings) "
                                            "without running the model."}),
                "save_name": ("STRING", {"default": "vrwkv_inversion",
                                         "tooltip": "File name (no folders) for 'invert and save' / 'load "
                                                    "saved'. Saving never replaces a file: a taken name gets the "
                                                    "next free counter (_00001, ...), shown under the node; load "
                                                    "that name."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt, needed only when cfg is not 1."}),
            },
        }

    def invert(self, model, latent, positive, steps, cfg, refine, mode, save_name, negative=None):
        import folder_paths
        import torch

        source = latent["samples"]
        frames = _frames(source, "latent")
        if not torch.count_nonzero(source):
            raise ValueError("the latent to invert is all zeros (an empty latent?): connect the VAE Encode "
                             "output of the source frames.")
        check_conditioning_batch(positive, frames, "positive")
        if negative is None:
            if cfg != 1.0:
                raise ValueError(f"cfg {cfg} needs a negative conditioning: connect one, or set cfg to 1.")
            negative = positive  # unused at cfg 1 (exactly cond + 1 * (cond - cond) if evaluated)
        check_conditioning_batch(negative, frames, "negative")
        sigmas = ddim_sigmas(sigma_table(model), steps)
        path = None if mode == "invert" else inversion_path(
            os.path.join(folder_paths.get_output_directory(), INVERSION_FOLDER), save_name)

        if mode == "load saved":
            inverted, saved_source, info = load_inversion(path)
            check_saved(path, saved_source, info, source, steps, cfg, refine, sigmas)
        else:
            inverted = run_ddim("VRWKV DDIM Inversion", model, torch.zeros_like(source), source, sigmas.flip(0),
                                positive, negative, cfg, eta=0.0, seed=0, inversion_refine=refine)
            info = Inversion.of(inverted, steps, cfg, refine, sigmas)
            if path is not None:
                path = save_inversion(path, inverted, source, info)
        result = ({"samples": inverted, LATENT_KEY: info.to_dict()}, sigmas)
        return {"ui": {"text": [path] if path else []}, "result": result}
