"""DDIM sampling and inversion for SD1.5 in ComfyUI's sigma space (torch only).

Conventions, relied on by the nodes and by saved inversions:

* Sigma space. ComfyUI's discrete models hold ``x = x0 + sigma * eps`` with
  ``sigma_t = sqrt((1 - a_t) / a_t)``, ``a_t = alphas_cumprod[t]`` (diffusers' latent is
  ``sqrt(a_t) * x``), and a sampler calls a model that returns the denoised ``x0_hat``.
  The timestep -> sigma table is the model's own (``model_sampling.sigmas``), so a model
  with another noise schedule keeps it.
* Schedule. diffusers' DDIMScheduler as SD1.5 and Tune-A-Video use it: "leading" timesteps
  with steps_offset 1 (``t_j = j * (T // N) + 1``, j = N-1..0) and set_alpha_to_one False, so
  the step after ``t = 1`` lands on ``alphas_cumprod[0]``: the last sampling sigma is
  ``sigma_table[0]`` (0.0292 for SD1.5), not 0.
* Ends. Sampling stops at ``sigma_table[0]`` and that x is the clean latent (diffusers
  decodes it as such); inversion starts from the clean latent placed at ``sigma_table[0]``
  and walks the same sigmas in reverse. One list serves both directions, so inversion then
  sampling with the same model and conditioning returns the input, up to the mismatch
  between the eps each direction evaluates (first order in the step size for a smooth
  model; large for an untrained one). ``inversion_refine`` removes that mismatch.
* Step. With eps the model's noise estimate, ``x0_hat = x - sigma * eps`` and
  ``x_next = x0_hat + sigma_next * eps``. Sampling (sigma_next < sigma) evaluates eps at
  (x, sigma): ``x_next = x0_hat + sigma_next * (x - x0_hat) / sigma``, the Euler step, i.e.
  core's ddim/euler. Inversion (sigma_next > sigma) is Tune-A-Video's ``next_step``: eps is
  evaluated at the *target* timestep, the UNet seeing the current latent as diffusers holds
  it (``sqrt(a) x``). In sigma space: the model called at sigma_next on
  ``x * sqrt((1 + sigma_next^2) / (1 + sigma^2))`` (ComfyUI feeds the UNet
  ``x / sqrt(1 + sigma^2)``, sigma_data 1). The sampling step back then evaluates the same
  timestep on a nearby input (10-25% lower round-trip error than evaluating at the current
  timestep, on the Gaussian test data and on a random-weight SD1.5).
* eta > 0 (sampling only). diffusers adds ``std = eta * sqrt((1-a_p)/(1-a_t)) *
  sqrt(1 - a_t/a_p)`` of noise to ``sqrt(a_p) x0 + sqrt(1 - a_p - std^2) eps``. Divided by
  ``sqrt(a_p)`` into sigma space (``a = 1 / (1 + sigma^2)``) this is
  ``x_next = x0_hat + sigma_down * eps + sigma_up * z`` with
  ``sigma_up = eta * sigma_next * sqrt(sigma^2 - sigma_next^2) / sigma`` and
  ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.
"""

import math

import torch

STEPS_OFFSET = 1  # diffusers' steps_offset for SD1.5


def ddim_timesteps(steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """diffusers' DDIM timesteps (leading spacing, steps_offset 1), largest first."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be between 1 and {num_train_timesteps} (the model's "
                         f"training timesteps), got {steps}: choose a step count in that range.")
    ratio = num_train_timesteps // steps
    return torch.arange(steps - 1, -1, -1, dtype=torch.long) * ratio + STEPS_OFFSET


def ddim_sigmas(sigma_table: torch.Tensor, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """Sampling sigmas (float32, CPU, steps + 1 values, decreasing, ending at sigma_table[0]).

    ``sigma_table[t]`` is the model's sigma at training timestep t. With denoise < 1 the
    schedule is built for ``int(steps / denoise)`` steps and its last ``steps`` kept, as
    core KSampler does. Inversion uses the same list flipped.
    """
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
    # For steps == len(table) the leading schedule starts at t = len(table), one past the
    # table (diffusers itself would index out of range). Clamp as ComfyUI's
    # model_sampling.sigma() does: that first step has zero length.
    sigmas = torch.cat([table[timesteps.clamp(max=len(table) - 1)], table[:1]])
    return sigmas[-(steps + 1):]


def ddim_noise_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of one DDIM step: deterministic direction and fresh noise."""
    if eta == 0.0:
        return sigma_next, 0.0
    sigma_up = eta * sigma_next * math.sqrt(sigma ** 2 - sigma_next ** 2) / sigma
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


def ddim_step(x, eps, sigma, sigma_next, eta: float = 0.0, noise=None):
    """One DDIM update of x from sigma to sigma_next given the model's noise estimate `eps`.

    `noise` (standard normal, shaped like x) is needed only when eta > 0.
    """
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
    """Standard normal noise like x, one draw per call, reproducible from `seed` on any device.

    Drawn on the CPU and seeded with seed + 1: ComfyUI draws a sampler's initial noise from
    torch.manual_seed(seed) on the CPU, and the same stream would add it again at step one.
    """
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
                inversion_refine=0):
    """DDIM over `sigmas` (decreasing: sampling; increasing: inversion), k-diffusion style.

    The signature is what ComfyUI's KSAMPLER calls: `model(x, sigma_batch, **extra_args)`
    returns x0_hat; `callback` gets k-diffusion's step dict; `disable` (console progress) is
    accepted for that signature only, ComfyUI's progress comes through `callback`. With
    eta > 0 noise comes from `noise_sampler(sigma, sigma_next)`, by default seeded from
    `extra_args["seed"]`.

    `inversion_refine` > 0 iterates each inversion step towards the fixed point
    ``x_next = x + (sigma_next - sigma) * eps(x_next, sigma_next)``, from which the sampling
    step returns to x exactly: one more model call per iteration, a closer reconstruction
    (0 is Tune-A-Video's inversion).
    """
    check_sigmas(sigmas, eta)
    if int(inversion_refine) != inversion_refine or inversion_refine < 0:
        raise ValueError(f"inversion_refine must be a whole number >= 0, got {inversion_refine}.")
    extra_args = {} if extra_args is None else extra_args
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
