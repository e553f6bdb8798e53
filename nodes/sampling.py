"""DDIM through ComfyUI's public sampling API, for the DDIM nodes (ComfyUI imported inside
functions)."""

from .common import MEMORY_KNOBS, frames_and_size, is_out_of_memory, out_of_memory


def require_eps_model(model, node: str):
    """The MODEL's model_sampling, after checking its latents are x0 + sigma * eps over
    discrete timesteps (SD1.5 and its fine-tunes): DDIM in sigma space and the tuning loss
    (noise prediction) need that; v-prediction fine-tunes are refused."""
    import comfy.model_sampling as ms

    sampling = model.get_model_object("model_sampling")
    # V_PREDICTION, X0 and LCM subclass EPS: its own conversions are what must be in use
    eps = all(getattr(type(sampling), name, None) is getattr(ms.EPS, name)
              for name in ("calculate_input", "calculate_denoised", "noise_scaling"))
    if not (isinstance(sampling, ms.ModelSamplingDiscrete) and eps):
        mro = type(sampling).__mro__
        prediction = next((c.__name__ for c in mro if "calculate_denoised" in vars(c)), "unknown")
        raise ValueError(f"{node} needs a noise-predicting model with discrete timesteps and x0 + sigma*eps "
                         f"latents (SD1.5 and its eps fine-tunes; v-prediction is not supported); this MODEL "
                         f"samples with {mro[1].__name__} and {prediction} prediction: load an SD1.5 checkpoint.")
    return sampling


def sigma_table(model):
    """The model's timestep -> sigma table (checked by require_eps_model)."""
    return require_eps_model(model, "VRWKV DDIM").sigmas


def ddim_sampler(eta: float, inversion_refine: int = 0, edit: bool = False):
    """The pack's DDIM as a ComfyUI SAMPLER (for SamplerCustom / SamplerCustomAdvanced); `edit`:
    it samples from an inversion (vrwkv/ddim.py, convention 5)."""
    import comfy.samplers

    from ..vrwkv.ddim import sample_ddim

    return comfy.samplers.KSAMPLER(sample_ddim, extra_options={"eta": float(eta), "edit": bool(edit),
                                                              "inversion_refine": int(inversion_refine)})


def run_ddim(node: str, model, noise, latent, sigmas, positive, negative, cfg: float, eta: float, seed: int,
             noise_mask=None, inversion_refine: int = 0, edit: bool = False):
    """comfy.sample.sample_custom with the pack's DDIM (`edit`: from an inversion), ComfyUI's
    preview/progress callback (which raises on interrupt) and its progress-bar setting; returns
    the LATENT samples. Running out of memory names the settings that need less."""
    import comfy.sample
    import comfy.utils
    import latent_preview

    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    sampler = ddim_sampler(eta, inversion_refine, edit)
    try:
        return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                          noise_mask=noise_mask, callback=callback,
                                          disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(node, f"on {frames_and_size(latent)}", MEMORY_KNOBS) from e
        raise
