"""DDIM math against closed forms, with an analytic denoiser: data drawn from a fixed
Gaussian N(mu, s^2) per element, whose exact x0_hat is mu + s^2 / (s^2 + sigma^2) (x - mu)
and whose probability-flow ODE is solved by x(sigma) - mu ~ sqrt(s^2 + sigma^2)."""

import math

import pytest
import torch

from vrwkv_editor.vrwkv.ddim import (EDIT_KEY, ddim_noise_split, ddim_sigmas, ddim_step, ddim_timesteps, sample_ddim,
                                     seeded_noise_sampler)

SHAPE = (2, 4, 8, 8)


def sd15_alphas_cumprod():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def sd15_sigma_table():
    a = sd15_alphas_cumprod()
    return ((1 - a) / a).sqrt()


class GaussianDenoiser:
    """Exact x0_hat for data ~ N(mu, s^2); records each call's sigma and extra kwargs."""

    def __init__(self, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(SHAPE, generator=g, dtype=dtype)
        self.s = 0.3 + 1.7 * torch.rand(SHAPE, generator=g, dtype=dtype)
        self.calls = []

    def __call__(self, x, sigma, **kwargs):
        self.calls.append((sigma.clone(), kwargs))
        s2 = self.s ** 2
        sig = sigma.view(-1, 1, 1, 1)
        return self.mu + s2 / (s2 + sig ** 2) * (x - self.mu)

    def data(self, seed=1):
        return self.mu + self.s * torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=self.mu.dtype)

    def flow(self, x, sigma, sigma_to):
        """Exact ODE transport of x from sigma to sigma_to."""
        s2 = self.s ** 2
        return self.mu + (x - self.mu) * ((s2 + sigma_to ** 2) / (s2 + sigma ** 2)).sqrt()


# --- schedule ---------------------------------------------------------------------------

def test_timesteps_10():
    assert ddim_timesteps(10).tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]


def test_timesteps_50():
    assert ddim_timesteps(50).tolist() == [
        981, 961, 941, 921, 901, 881, 861, 841, 821, 801, 781, 761, 741, 721, 701, 681, 661, 641, 621, 601,
        581, 561, 541, 521, 501, 481, 461, 441, 421, 401, 381, 361, 341, 321, 301, 281, 261, 241, 221, 201,
        181, 161, 141, 121, 101, 81, 61, 41, 21, 1]


def test_timesteps_1000():
    # diffusers: (arange(1000) * 1)[::-1] + 1, i.e. 1000, 999, ..., 1 (t = 1000 is one past
    # the training table; ddim_sigmas clamps it).
    t = ddim_timesteps(1000).tolist()
    assert t == list(range(1000, 0, -1))
    assert t[:3] == [1000, 999, 998] and t[-3:] == [3, 2, 1]


def test_timesteps_when_steps_do_not_divide_1000():
    assert ddim_timesteps(7).tolist() == [853, 711, 569, 427, 285, 143, 1]
    assert ddim_timesteps(30).tolist()[:3] == [958, 925, 892] and ddim_timesteps(30).tolist()[-1] == 1


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_timesteps_reject_bad_steps(steps):
    with pytest.raises(ValueError, match="between 1 and 1000"):
        ddim_timesteps(steps)


def test_sigmas_follow_the_timesteps_and_end_at_alphas_cumprod_0():
    table = sd15_sigma_table()
    sigmas = ddim_sigmas(table, 50)
    assert sigmas.dtype == torch.float32 and len(sigmas) == 51
    expected = [float(table[t]) for t in range(981, 0, -20)] + [float(table[0])]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)
    a0 = float(sd15_alphas_cumprod()[0])
    assert float(sigmas[-1]) == pytest.approx(math.sqrt((1 - a0) / a0), rel=1e-6)
    assert float(sigmas[-1]) == pytest.approx(0.0292, abs=1e-4)


def test_sigmas_for_1000_steps_clamp_the_first_timestep():
    table = sd15_sigma_table().float()
    sigmas = ddim_sigmas(table, 1000)
    assert len(sigmas) == 1001
    assert sigmas[0] == sigmas[1] == table[999]
    assert torch.equal(sigmas[1:], table.flip(0))  # t = 999..1, then alphas_cumprod[0]


def test_sigmas_with_denoise_keep_the_tail_of_a_longer_schedule():
    table = sd15_sigma_table()
    assert torch.equal(ddim_sigmas(table, 20, denoise=0.5), ddim_sigmas(table, 40)[-21:])
    assert ddim_sigmas(table, 20, denoise=0.5)[0] == pytest.approx(float(table[476]), rel=1e-6)


@pytest.mark.parametrize("steps,denoise,match", [(20, 0.0, "denoise"), (20, 1.5, "denoise"), (50, 0.04, "1250-step")])
def test_sigmas_reject_bad_denoise(steps, denoise, match):
    with pytest.raises(ValueError, match=match):
        ddim_sigmas(sd15_sigma_table(), steps, denoise)


# --- one step ---------------------------------------------------------------------------

def test_sampling_step_matches_closed_form():
    den = GaussianDenoiser()
    x = den.data() + 3.0 * torch.randn(SHAPE, dtype=torch.float64)
    s2 = den.s ** 2
    for sigma, sigma_next in [(3.0, 1.2), (14.6, 0.0292), (0.0413, 0.0292)]:
        eps = (x - den(x, torch.tensor([sigma], dtype=torch.float64))) / sigma
        closed = den.mu + (x - den.mu) * (s2 + sigma * sigma_next) / (s2 + sigma ** 2)
        torch.testing.assert_close(ddim_step(x, eps, sigma, sigma_next), closed, rtol=1e-12, atol=1e-12)


def tune_a_video_next_step(x_sigma, a_cur, a_next, eps_model):
    """Tune-A-Video's next_step in diffusers' space, eps_model(x_ddpm, a) evaluated at the
    current latent with the target timestep; mapped from/to sigma space."""
    sample = math.sqrt(a_cur) * x_sigma
    model_output = eps_model(sample, a_next)
    next_original_sample = (sample - (1 - a_cur) ** 0.5 * model_output) / a_cur ** 0.5
    next_sample = a_next ** 0.5 * next_original_sample + (1 - a_next) ** 0.5 * model_output
    return next_sample / math.sqrt(a_next)


@pytest.mark.parametrize("t_cur,t_next", [(None, 1), (1, 21), (481, 501), (961, 981)])
def test_inversion_step_is_tune_a_video_next_step(t_cur, t_next):
    a = sd15_alphas_cumprod()
    a_cur, a_next = float(a[0] if t_cur is None else a[t_cur]), float(a[t_next])
    sigmas = torch.tensor([((1 - a_cur) / a_cur) ** 0.5, ((1 - a_next) / a_next) ** 0.5], dtype=torch.float64)
    den = GaussianDenoiser()
    x = den.data() + float(sigmas[0]) * torch.randn(SHAPE, dtype=torch.float64)

    def eps_model(x_ddpm, a_t):  # exact eps of the Gaussian data in diffusers' space
        sigma_t = ((1 - a_t) / a_t) ** 0.5
        return sigma_t / (den.s ** 2 + sigma_t ** 2) * (x_ddpm / a_t ** 0.5 - den.mu)

    expected = tune_a_video_next_step(x, a_cur, a_next, eps_model)
    torch.testing.assert_close(sample_ddim(den, x, sigmas), expected, rtol=1e-10, atol=1e-10)
    assert float(den.calls[0][0][0]) == float(sigmas[1])  # the model ran at the target sigma


def diffusers_ddim_step(x_sigma, eps, a_t, a_p, eta, z):
    """diffusers' DDIMScheduler.step in its own (alpha) space, mapped from/to sigma space."""
    x = math.sqrt(a_t) * x_sigma
    x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    std = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p)
    prev = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p - std ** 2) * eps + std * z
    return prev / math.sqrt(a_p)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("t,t_prev", [(981, 961), (501, 481), (21, 1), (1, None)])
def test_step_matches_diffusers_formula_with_eta(eta, t, t_prev):
    a = sd15_alphas_cumprod()
    a_t, a_p = float(a[t]), float(a[0] if t_prev is None else a[t_prev])
    sigma, sigma_next = math.sqrt((1 - a_t) / a_t), math.sqrt((1 - a_p) / a_p)
    den = GaussianDenoiser()
    x = den.data() + sigma * torch.randn(SHAPE, dtype=torch.float64)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = (x - den(x, torch.tensor([sigma], dtype=torch.float64))) / sigma
    out = ddim_step(x, eps, sigma, sigma_next, eta, z)
    torch.testing.assert_close(out, diffusers_ddim_step(x, eps, a_t, a_p, eta, z), rtol=1e-10, atol=1e-10)


def test_noise_split_is_k_diffusion_ancestral_form():
    down, up = ddim_noise_split(5.0, 2.0, 1.0)
    assert up == pytest.approx(math.sqrt(2.0 ** 2 * (5.0 ** 2 - 2.0 ** 2) / 5.0 ** 2))
    assert down ** 2 + up ** 2 == pytest.approx(4.0)
    assert ddim_noise_split(5.0, 2.0, 0.0) == (2.0, 0.0)
    assert ddim_noise_split(5.0, 0.0, 1.0) == (0.0, 0.0)


# --- whole walks ------------------------------------------------------------------------

def test_sampling_matches_product_of_closed_form_steps_and_reports_each_step():
    den = GaussianDenoiser()
    sigmas = ddim_sigmas(sd15_sigma_table(), 10).double()
    x_T = den.mu + float(sigmas[0]) * torch.randn(SHAPE, dtype=torch.float64)
    seen = []
    out = sample_ddim(den, x_T, sigmas, extra_args={"seed": 3, "model_options": "opts"},
                      callback=lambda d: seen.append((d["i"], float(d["sigma"]), d["denoised"].shape)))
    s2, expected = den.s ** 2, x_T - den.mu
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        expected = expected * (s2 + sigma * sigma_next) / (s2 + sigma ** 2)
    torch.testing.assert_close(out, den.mu + expected, rtol=1e-10, atol=1e-10)
    assert seen == [(i, s, SHAPE) for i, s in enumerate(sigmas[:-1].tolist())]
    assert all(kw == {"seed": 3, "model_options": "opts"} for _, kw in den.calls)
    assert [c[0].tolist() for c in den.calls] == [[s, s] for s in sigmas[:-1].tolist()]


def test_inversion_and_edits_tell_the_model_calls_and_leave_the_caller_s_options():
    """An inversion, and sampling with edit=True, add EDIT_KEY to the transformer options of
    every model call (ComfyUI's model_options, kept otherwise); plain sampling adds nothing,
    and the caller's dicts are not changed."""
    den = GaussianDenoiser()
    sigmas = ddim_sigmas(sd15_sigma_table(), 4).double()
    options = {"transformer_options": {"patches": "p"}, "other": 1}
    x = torch.randn(SHAPE, dtype=torch.float64)

    def calls(walk, **kw):
        den.calls.clear()
        sample_ddim(den, x, walk, extra_args={"seed": 0, "model_options": options}, **kw)
        return [c[1]["model_options"] for c in den.calls]
    marked = {"transformer_options": {"patches": "p", EDIT_KEY: True}, "other": 1}
    assert calls(sigmas.flip(0)) == [marked] * 4
    assert calls(sigmas, edit=True) == [marked] * 4
    assert calls(sigmas) == [options] * 4
    assert options == {"transformer_options": {"patches": "p"}, "other": 1}


def round_trip(den, x0, steps):
    sigmas = ddim_sigmas(sd15_sigma_table(), steps).double()
    inverted = sample_ddim(den, x0, sigmas.flip(0))
    return sigmas, inverted, sample_ddim(den, inverted, sigmas)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_inversion_then_sampling_returns_the_input_with_error_falling_as_steps_grow():
    den = GaussianDenoiser()
    x0 = den.data()
    errors, flow_errors = [], []
    for steps in [5, 10, 20, 50, 100, 250]:
        sigmas, inverted, rec = round_trip(den, x0, steps)
        errors.append(rel(rec, x0))
        exact_noise = den.flow(x0, float(sigmas[-1]), float(sigmas[0]))
        flow_errors.append(rel(inverted, exact_noise))
        assert rel(inverted, x0) > 1.0  # it really went to noise (first sigma >= 4.9, data std <= 2)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert all(a > b for a, b in zip(flow_errors, flow_errors[1:])), flow_errors
    assert errors[0] > 1e-3, "a round trip at 5 steps should not be exact: the test would be blind"
    # Measured: 0.18, 0.12, 0.070, 0.031, 0.016, 0.0065 (first order; the data's small-variance
    # elements lose most, where sigma ~ s and the steps are coarse).
    assert errors[3] < 0.05 and errors[-1] < 0.01, errors  # 50 and 250 steps
    assert flow_errors[3] < 0.1, flow_errors  # the inverted latent is the ODE's noise (0.056 measured)
    assert errors[-1] / errors[-2] < 0.5  # first order: 2.5x the steps, ~2.5x less error


def test_refined_inversion_is_undone_exactly_by_sampling():
    den = GaussianDenoiser()
    x0 = den.data()
    sigmas = ddim_sigmas(sd15_sigma_table(), 10).double()
    errors, calls = [], []
    for refine in [0, 1, 3, 10, 40]:
        den.calls.clear()
        inverted = sample_ddim(den, x0, sigmas.flip(0), inversion_refine=refine)
        calls.append(len(den.calls))
        errors.append(rel(sample_ddim(den, inverted, sigmas), x0))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-9, errors
    assert calls == [10 * (1 + r) for r in [0, 1, 3, 10, 40]]
    with pytest.raises(ValueError, match="inversion_refine"):
        sample_ddim(den, x0, sigmas.flip(0), inversion_refine=-1)


def test_eta_zero_is_deterministic_and_ignores_the_seed():
    den = GaussianDenoiser()
    sigmas = ddim_sigmas(sd15_sigma_table(), 20)
    x_T = float(sigmas[0]) * torch.randn(SHAPE, dtype=torch.float64)
    a = sample_ddim(den, x_T, sigmas, extra_args={"seed": 1})
    b = sample_ddim(den, x_T, sigmas, extra_args={"seed": 2})
    assert torch.equal(a, b)


def test_eta_positive_is_seeded_reproducible():
    den = GaussianDenoiser()
    sigmas = ddim_sigmas(sd15_sigma_table(), 20)
    x_T = float(sigmas[0]) * torch.randn(SHAPE, dtype=torch.float64)
    run = lambda seed: sample_ddim(den, x_T, sigmas, extra_args={"seed": seed}, eta=0.5)
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))
    assert not torch.allclose(run(7), sample_ddim(den, x_T, sigmas, eta=0.0))


def test_seeded_noise_is_not_comfyui_initial_noise_stream():
    x = torch.zeros(SHAPE)
    first = seeded_noise_sampler(x, 42)(1.0, 0.5)
    assert not torch.allclose(first, torch.randn(SHAPE, generator=torch.manual_seed(42)))
    assert torch.equal(first, seeded_noise_sampler(x, 42)(1.0, 0.5))


def test_eta_noise_has_the_variance_the_ddim_recurrence_predicts():
    # Fresh unit noise of std sigma_up each step: Var(x_next - mu) = c^2 Var(x - mu) + sigma_up^2
    # with c = (s^2 + sigma_down sigma) / (s^2 + sigma^2). Reused or mis-scaled noise fails this.
    s, n = 0.7, 200_000
    den = GaussianDenoiser()
    den.mu, den.s = torch.zeros(n, 1, 1, 1, dtype=torch.float64), torch.full((n, 1, 1, 1), s, dtype=torch.float64)
    sigmas = ddim_sigmas(sd15_sigma_table(), 10).double()
    x_T = (s ** 2 + float(sigmas[0]) ** 2) ** 0.5 * torch.randn(n, 1, 1, 1, dtype=torch.float64)
    var = s ** 2 + float(sigmas[0]) ** 2
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        down, up = ddim_noise_split(sigma, sigma_next, 1.0)
        var = ((s ** 2 + down * sigma) / (s ** 2 + sigma ** 2)) ** 2 * var + up ** 2
    out = sample_ddim(den, x_T, sigmas, extra_args={"seed": 0}, eta=1.0)
    assert out.var().item() == pytest.approx(var, rel=0.02)


def test_bad_sigmas_and_eta_are_rejected():
    den = GaussianDenoiser()
    x = torch.zeros(SHAPE, dtype=torch.float64)
    up = torch.tensor([0.03, 1.0, 5.0])
    with pytest.raises(ValueError, match="set eta to 0 for inversion"):
        sample_ddim(den, x, up, eta=0.5)
    with pytest.raises(ValueError, match="sigma 0"):
        sample_ddim(den, x, torch.tensor([0.0, 1.0, 5.0]))
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        sample_ddim(den, x, up.flip(0), eta=1.5)
    with pytest.raises(ValueError, match="finite"):
        sample_ddim(den, x, torch.tensor([5.0, float("nan"), 0.0]))
    assert not den.calls


def test_sigma_zero_at_the_end_returns_the_denoised_estimate():
    den = GaussianDenoiser()
    x = den.data() + 2.0 * torch.randn(SHAPE, dtype=torch.float64)
    sigmas = torch.tensor([2.0, 0.0], dtype=torch.float64)
    out = sample_ddim(den, x, sigmas, eta=1.0, extra_args={"seed": 0})
    torch.testing.assert_close(out, den(x, sigmas[:1]))
