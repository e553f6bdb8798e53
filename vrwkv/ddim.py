"""DDIM sampling and inversion for SD1.5 in ComfyUI's sigma space (torch only).

Conventions the nodes and saved inversions rely on:
1. Sigma space: ``x = x0 + sigma * eps``, ``sigma_t = sqrt((1 - a_t) / a_t)``,
   ``a_t = alphas_cumprod[t]``; the model returns x0_hat; sigmas come from its own table.
2. Schedule: diffusers' DDIMScheduler as SD1.5 and Tune-A-Video use it ("leading", steps_offset
   1, set_alpha_to_one False): sampling ends at ``sigma_table[0]`` (the clean latent), not 0,
   and inversion walks the same sigmas back from there.
3. Step: ``x_next = x0_hat + sigma_next * eps``. Sampling takes eps at (x, sigma), as core's
   ddim/euler. Inversion takes it, as Tune-A-Video's ``next_step``, at the target timestep on
   diffusers' latent ``sqrt(a) x``; ComfyUI feeds the UNet ``x / sqrt(1 + sigma^2)``, so that is
   the model at sigma_next on ``x * sqrt((1 + sigma_next^2) / (1 + sigma^2))``. The step back
   then evaluates the same timestep (CONTRIBUTING.md, design notes).
4. eta > 0 (sampling only): diffusers' noise in sigma space, ``ddim_noise_split``.
5. An inversion, and sampling with ``edit`` (from an inversion), put EDIT_KEY in the model call's
   transformer options: VRWKV blocks with channel_mix_pad "repeat-edits" then read frame 0 as its
   own past, the same way in both, so sampling back still returns to the clip.
"""

import math

import torch

STEPS_OFFSET = 1  # diffusers' steps_offset for SD1.5
EDIT_KEY = "vrwkv_edit"   # transformer_options[EDIT_KEY]: this call inverts a clip or samples an edit of it


def ddim_timesteps(steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """diffusers' DDIM timesteps (leading spacing, steps_offset 1), largest first."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be between 1 and {num_train_timesteps} (the model's "
                         f"training timesteps), got {steps}: choose a step count in that range.")
    ratio = num_train_timesteps // steps
    return torch.arange(steps - 1, -1, -1, dtype=torch.long) * ratio + STEPS_OFFSET


def ddim_sigmas(sigma_table: torch.Tensor, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """Sampling sigmas (float32, CPU, steps + 1 values, decreasing, ending at sigma_table[0]),
    ``sigma_table[t]`` being the model's sigma at timestep t. With denoise < 1: the last
    ``steps`` of an ``int(steps / denoise)``-step schedule, as core KSampler does."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}: use 1.0 for a full "
                         "re-generation, less to keep more of the input latent.")
    table = sigma_table.detach().flatten().float().cpu()
    total = int(steps / denoise)
    if total > len(table):
        raise ValueError(f"steps / denoise = {steps} / {denoise} asks for a {total}-step DDIM "
                         f"schedule but the model has {len(table)} timesteps: lower steps or "
                         "raise denoise.")
    timesteps = ddim_timesteps(total, len(table))
    # At steps == len(table) the schedule starts one past the table: clamp as ComfyUI's
    # model_sampling.sigma() does (a zero-length first step).
    sigmas = torch.cat([table[timesteps.clamp(max=len(table) - 1)], table[:1]])
    return sigmas[-(steps + 1):]


def percent_to_sigma(sigma_table: torch.Tensor, percent: float) -> float:
    """The sigma `percent` of the way through sampling, as ComfyUI's discrete model_sampling
    computes it: timestep (1 - percent) * (T - 1), log-sigma interpolated between the table's
    neighbours; past the ends, above every sigma (0) or below every sigma (1)."""
    if percent <= 0.0:
        return math.inf
    if percent >= 1.0:
        return 0.0
    log_table = sigma_table.detach().flatten().double().cpu().log()
    t = (1.0 - percent) * (len(log_table) - 1)
    low = math.floor(t)
    high = min(low + 1, len(log_table) - 1)
    w = t - low
    return math.exp((1 - w) * log_table[low].item() + w * log_table[high].item())


def ddim_noise_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of one DDIM step: deterministic direction and fresh noise."""
    if eta == 0.0:
        return sigma_next, 0.0
    sigma_up = eta * sigma_next * math.sqrt(sigma ** 2 - sigma_next ** 2) / sigma
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


def ddim_step(x, eps, sigma, sigma_next, eta: float = 0.0, noise=None):
    """One DDIM update from sigma to sigma_next given eps; `noise` (like x) only when eta > 0."""
    sigma, sigma_next = float(sigma), float(sigma_next)
    sigma_down, sigma_up = ddim_noise_split(sigma, sigma_next, eta)
    x_next = x + eps * (sigma_down - sigma)  # x0_hat + sigma_down * eps
    return x_next + noise * sigma_up if sigma_up > 0.0 else x_next


def eps_point(x, sigma, sigma_next):
    """(model input, sigma to call the model at) for the eps of a step from sigma to sigma_next:
    the current point when sampling, Tune-A-Video's target-timestep point when inverting."""
    if sigma_next <= sigma:
        return x, sigma
    return x * math.sqrt((1.0 + float(sigma_next) ** 2) / (1.0 + float(sigma) ** 2)), sigma_next


def seeded_noise_sampler(x, seed):
    """Standard normal noise like x, one draw per call, drawn on the CPU from seed + 1 (random
    for None): ComfyUI draws the initial noise from seed, which would add it again at step one."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((int(seed) + 1) % 2 ** 64)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator).to(x)


def check_sigmas(sigmas, eta: float) -> None:
    """ValueError unless `sigmas` and `eta` make a valid DDIM walk (either direction)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1] (0 deterministic, 1 DDPM-like), got {eta}.")
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D tensor, got shape {tuple(sigmas.shape)}.")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError("sigmas must be finite and non-negative: check the scheduler feeding this sampler.")
    if (sigmas[:-1] == 0).any():
        raise ValueError("a DDIM step cannot start at sigma 0 (eps is undefined there): to invert, "
                         "start at the model's smallest sigma (VRWKV DDIM Inversion does) or use "
                         "core FlipSigmas, which moves a leading 0 to 1e-4.")
    if eta > 0.0 and (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError(f"eta = {eta} adds noise, which only sampling (decreasing sigmas) can do: "
                         "set eta to 0 for inversion (increasing sigmas).")


@torch.no_grad()
def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, noise_sampler=None,
                inversion_refine=0, edit=False):
    """DDIM over `sigmas` (decreasing: sampling; increasing: inversion) as ComfyUI's KSAMPLER
    calls it. `inversion_refine` > 0 iterates each inversion step towards the fixed point
    ``x_next = x + (sigma_next - sigma) * eps(x_next, sigma_next)``, from which sampling
    returns to x exactly (one model call per iteration; 0 is Tune-A-Video's inversion).
    `edit`: x is an inversion (convention 5; an inversion is always marked)."""
    check_sigmas(sigmas, eta)
    if int(inversion_refine) != inversion_refine or inversion_refine < 0:
        raise ValueError(f"inversion_refine must be a whole number >= 0, got {inversion_refine}.")
    extra_args = {} if extra_args is None else extra_args
    if edit or sigmas[-1] > sigmas[0]:
        options = extra_args.get("model_options", {})
        extra_args = {**extra_args, "model_options": {
            **options, "transformer_options": {**options.get("transformer_options", {}), EDIT_KEY: True}}}
    if eta > 0.0 and noise_sampler is None:
        noise_sampler = seeded_noise_sampler(x, extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])

    def eps_at(x_in, sigma_in):
        return (x_in - model(x_in, sigma_in * s_in, **extra_args)) / sigma_in

    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        eps = eps_at(*eps_point(x, sigma, sigma_next))
        for _ in range(int(inversion_refine) if sigma_next > sigma else 0):
            eps = eps_at(ddim_step(x, eps, sigma, sigma_next), sigma_next)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x - sigma * eps})
        noise = noise_sampler(sigma, sigma_next) if eta > 0.0 and sigma_next > 0 else None
        x = ddim_step(x, eps, sigma, sigma_next, eta, noise)
    return x
