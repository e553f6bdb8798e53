"""The tuning loop on a miniature UNet with VRWKV blocks and a synthetic moving clip."""

import pytest
import torch

from toyworld.unet import latent_unet
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch
from vrwkv_editor.vrwkv.tuning import NonFiniteLoss, TuneSettings, draw_noise, param_groups, tune

FRAMES = 6
# SD1.5's noise levels: sigma_t = sqrt((1 - a_t) / a_t), scaled-linear betas
ALPHAS = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2, 0)
SIGMAS = ((1 - ALPHAS) / ALPHAS).sqrt().float()


def moving_clip():
    """A bright square moving one pixel per frame over a gradient, as 4-channel latents."""
    x = torch.linspace(-1, 1, 8)
    frames = []
    for f in range(FRAMES):
        frame = (x[None, :] * 0.5).expand(4, 8, 8).clone()
        frame[:, 2:5, f:f + 3] += 1.5
        frames.append(frame)
    return torch.stack(frames)


class Setup:
    """A frozen latent_unet, a VRWKV patch on it, the clip and a context."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.unet = latent_unet()
        self.unet.requires_grad_(False)
        self.patch = VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(self.unet), BlockConfig(channel_mix=2))))
        self.x0 = moving_clip()
        self.context = torch.randn(1, 5, 12).expand(FRAMES, 5, 12)
        self.opts = {"cond_or_uncond": [0], "patches": {"output_block_patch": [self.patch]}}

    def loss_at(self, t, noise):
        sigma = SIGMAS[t]
        x = (self.x0 + sigma * noise) / (sigma ** 2 + 1).sqrt()
        eps = self.unet(x, torch.full((FRAMES,), float(t)), self.context, self.opts)
        return torch.nn.functional.mse_loss(eps, noise)

    def step_loss(self, generator):
        return self.loss_at(*draw_noise(generator, self.x0))

    def eval_loss(self):
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            return sum(float(self.loss_at(*draw_noise(g, self.x0))) for _ in range(16)) / 16

    def state(self):
        return {k: v.clone() for k, v in self.patch.blocks.state_dict().items()}


def run(setup, steps, seed=0, lr=2e-3, **kw):
    return tune(setup.patch.blocks.parameters(), setup.step_loss, TuneSettings(steps=steps, lr=lr, seed=seed), **kw)


def test_tuning_lowers_the_loss_and_changes_only_the_blocks():
    s = Setup()
    unet_before = {k: v.clone() for k, v in s.unet.state_dict().items()}
    blocks_before = s.state()
    before = s.eval_loss()
    losses = run(s, 40, lr=1e-2)
    after = s.eval_loss()
    assert len(losses) == 40 and after < 0.9 * before, (before, after)
    assert all(torch.equal(v, s.unet.state_dict()[k]) for k, v in unet_before.items())
    assert any(not torch.equal(v, s.patch.blocks.state_dict()[k]) for k, v in blocks_before.items())


def largest_moves(steps, zero_gradients=False, **settings):
    """Largest |change| of each kind of block parameter after `steps` recipe steps (lr 3e-5)
    with the temporal parameters in their own group."""
    s = Setup()
    before = s.state()
    settings = TuneSettings(steps=steps, **{"lr": 3e-5, **settings})
    step_loss = (lambda g: 0 * s.step_loss(g)) if zero_gradients else s.step_loss
    tune(param_groups(s.patch.blocks.named_parameters(), settings), step_loss, settings)
    after = s.patch.blocks.state_dict()
    kinds = {"mu": lambda k: k.rsplit(".", 1)[-1].startswith("mu"), "decay": lambda k: k.endswith(".decay"),
             "first": lambda k: k.endswith(".first"), "projections": lambda k: k.endswith("proj.weight")}
    return {kind: max((after[k] - before[k]).abs().max().item() for k in before if match(k))
            for kind, match in kinds.items()}


def test_recipe_run_moves_mu_decay_first_and_projections():
    """At the recipe's lr (3e-5) AdamW moves a parameter by at most ~lr per step: in 20
    steps 6e-4, nothing for mu, decay and first (init 1.0, meaningful over several units)
    and little for new, zero-initialised projections. The temporal group (lr x 100, no weight
    decay) must move each by >= 0.03 (half of what 20 steps of lr x 100 allow), the
    projections (lr x 10) by >= 3e-3. The bounds are checked against the ways a run can look
    like learning without being it: zeroed gradients (AdamW's weight decay moves every weight
    by itself) and no multipliers."""
    steps, temporal, projections = 20, 0.03, 3e-3
    moves = largest_moves(steps)
    assert all(moves[k] >= temporal for k in ("mu", "decay", "first")), moves
    assert moves["projections"] >= projections, moves
    frozen = largest_moves(steps, zero_gradients=True)
    assert max(frozen.values()) < 3e-4, frozen
    no_multiplier = largest_moves(steps, temporal_lr_multiplier=1.0, block_lr_multiplier=1.0)
    assert max(no_multiplier[k] for k in ("mu", "decay", "first")) < temporal, no_multiplier
    assert no_multiplier["projections"] < projections, no_multiplier


def test_temporal_group_holds_every_mu_decay_and_first():
    s = Setup()
    rest, temporal = param_groups(s.patch.blocks.named_parameters(), TuneSettings())
    names = {id(p): n for n, p in s.patch.blocks.named_parameters()}
    leaves = {names[id(p)].rsplit(".", 1)[-1] for p in temporal["params"]}
    assert leaves == {"mu", "mu_k", "mu_r", "decay", "first"}
    assert temporal["weight_decay"] == 0 and temporal["lr"] == TuneSettings().lr * TuneSettings().temporal_lr_multiplier > TuneSettings().lr
    assert "weight_decay" not in rest and rest["lr"] == TuneSettings().lr * TuneSettings().block_lr_multiplier > TuneSettings().lr
    assert not any(names[id(p)].rsplit(".", 1)[-1] in leaves for p in rest["params"])
    assert len(rest["params"]) + len(temporal["params"]) == len(names)


def test_pretrained_weights_get_the_recipes_rate():
    """Pretrained weights tuned beside the blocks (the query projections) form a group of their
    own at the settings' lr with the recipe's weight decay, not the blocks' multiplied rate."""
    s = Setup()
    query = torch.nn.Parameter(torch.zeros(4, 4))
    settings = TuneSettings()
    groups = param_groups(s.patch.blocks.named_parameters(), settings, pretrained=[query])
    assert len(groups) == 3 and groups[2]["params"] == [query]
    opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    assert opt.param_groups[2]["lr"] == settings.lr and opt.param_groups[2]["weight_decay"] == settings.weight_decay
    assert len(param_groups(s.patch.blocks.named_parameters(), settings)) == 2


def test_only_the_chosen_parameters_change():
    s = Setup()
    before = s.state()
    chosen = [p for n, p in s.patch.blocks.named_parameters() if n.startswith("blocks.mid.")]
    tune(chosen, s.step_loss, TuneSettings(steps=3, lr=1e-3))
    after = s.patch.blocks.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("blocks.mid.") for k in changed)


def test_tuning_a_copy_leaves_the_original_patch_untouched():
    s = Setup()
    original = s.state()
    s.patch = s.patch.copy()
    s.opts["patches"]["output_block_patch"] = [s.patch]
    run(s, 3)
    tuned = s.patch.blocks.state_dict()
    assert any(not torch.equal(original[k], tuned[k]) for k in original)
    fresh = Setup()                                    # same seed: the original's values
    assert all(torch.equal(v, fresh.state()[k]) for k, v in original.items())


def test_same_seed_same_run():
    a, b = Setup(), Setup()
    assert run(a, 5, seed=7) == run(b, 5, seed=7)
    assert all(torch.equal(v, b.patch.blocks.state_dict()[k]) for k, v in a.patch.blocks.state_dict().items())
    assert run(Setup(), 5, seed=8) != run(Setup(), 5, seed=7)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_weights():
    s, ref = Setup(), Setup()
    run(ref, 2)
    calls = {"n": 0}

    def poisoned(generator):
        calls["n"] += 1
        loss = s.step_loss(generator)
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(NonFiniteLoss, match="at step 3; the weights of step 2 are kept"):
        tune(s.patch.blocks.parameters(), poisoned, TuneSettings(steps=10, lr=2e-3))
    assert all(torch.equal(v, ref.patch.blocks.state_dict()[k]) for k, v in s.patch.blocks.state_dict().items())


def test_interrupt_keeps_the_completed_steps():
    s, ref = Setup(), Setup()
    run(ref, 4)

    class Interrupted(Exception):
        pass

    def on_step(step, loss):
        if step == 4:
            raise Interrupted()

    with pytest.raises(Interrupted):
        run(s, 50, on_step=on_step)
    assert all(torch.equal(v, ref.patch.blocks.state_dict()[k]) for k, v in s.patch.blocks.state_dict().items())


def test_nothing_to_tune_is_an_error():
    with pytest.raises(ValueError, match="nothing to tune"):
        tune([torch.nn.Parameter(torch.zeros(2), requires_grad=False)], lambda g: torch.zeros(()), TuneSettings())


def test_non_finite_start_is_refused_before_any_step():
    """Bi-WKV no longer checks w and u on every (CUDA) call: tuning checks its parameters
    once before the first step, so a diverged decay is named, not trained on."""
    s = Setup()
    with torch.no_grad():
        s.patch.blocks.blocks["mid"].spatial_mix.decay[0] = float("nan")
    calls = []
    with pytest.raises(NonFiniteLoss, match="starts from non-finite weights"):
        tune(s.patch.blocks.parameters(), lambda g: calls.append(1) or s.step_loss(g), TuneSettings(steps=3))
    assert calls == []


def test_loss_curve_image():
    from vrwkv_editor.nodes.plots import as_image_tensor, loss_curve
    image = as_image_tensor(loss_curve([1.0, 0.8, 0.9, 0.5, 0.4] * 10))
    assert image.shape == (1, 256, 512, 3) and 0 <= image.min() and image.max() <= 1
    assert (image[0, 20:220, 40:500].std(dim=(0, 1)) > 0.02).any()      # something was drawn
    assert as_image_tensor(loss_curve([])).shape == (1, 256, 512, 3)


def test_auto_training_dtype_is_float32_on_the_cpu():
    """The name-to-dtype choice only; that the UNet then computes in it is checked in a real
    ComfyUI (integration: test_training_dtype_is_the_dtype_the_unet_computes_in)."""
    from vrwkv_editor.nodes.tune import resolve_dtype
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32          # bf16 autocast is slow on CPUs
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("float32", cpu) == torch.float32


def test_query_delta_is_added_in_float32():
    """A delta of 1e-4 of the weight is below half a bfloat16 step of it (2e-3 to 4e-3):
    added in bfloat16 it would vanish; the wrapper returns W + delta in float32."""
    from vrwkv_editor.nodes.trainer import QueryDelta
    weight = (torch.rand(8, 8) + 0.5).to(torch.bfloat16)
    wrapper = QueryDelta(weight)
    with torch.no_grad():
        wrapper.delta.copy_(1e-4 * weight.float())
    out = wrapper(weight)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out - weight.float(), wrapper.delta.detach(), rtol=1e-2, atol=0)


def test_retuning_composes_the_differences_from_the_checkpoint():
    from vrwkv_editor.nodes.trainer import compose_deltas
    earlier = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    new = {"a": torch.tensor([0.5, -2.0]), "c": torch.tensor([4.0])}
    total = compose_deltas(earlier, new)
    assert set(total) == {"a", "b", "c"}
    assert torch.equal(total["a"], torch.tensor([1.5, 0.0])) and torch.equal(total["b"], earlier["b"])
    assert torch.equal(total["c"], new["c"])
    for alone in (earlier, new):            # a run of trainable=vrwkv keeps the earlier differences
        kept = compose_deltas(alone, {}) if alone is earlier else compose_deltas({}, alone)
        assert kept.keys() == alone.keys() and all(torch.equal(kept[k], alone[k]) for k in alone)


def test_checkpointed_recompute_sees_the_transformer_options_of_its_call():
    """The UNet rewrites one transformer_options dict as it goes; a patch looked up by block
    must get the same block when backward recomputes the layer."""
    from vrwkv_editor.nodes.trainer import checkpointed
    weights = {("input", i): torch.nn.Parameter(torch.tensor(float(i + 1))) for i in range(3)}

    def layer(x, transformer_options):
        return (x * weights[transformer_options["block"]]).sin()

    def unet(x, forward):
        options = {}
        for i in range(3):
            options["block"] = ("input", i)
            x = forward(x, options)
        return x.sum()

    grads = []
    for forward in (layer, checkpointed(layer)):
        unet(torch.linspace(0.1, 1.0, 5), forward).backward()
        grads.append(torch.stack([w.grad for w in weights.values()]))
        for w in weights.values():
            w.grad = None
    torch.testing.assert_close(grads[1], grads[0])


def test_epsilon_loss_is_zero_for_the_exact_denoiser_only():
    """The recipe's loss in sigma space: x = x0 + sigma * eps, so a denoiser that returns x0
    implies exactly the drawn eps (loss 0), and one that returns x implies none (loss ~ 1)."""
    from vrwkv_editor.vrwkv.tuning import epsilon_loss
    x0 = torch.randn(4, 3, 8, 8)
    sigmas = torch.linspace(0.03, 14.6, 1000)
    exact = epsilon_loss(lambda x, sigma: x0, x0, sigmas, torch.Generator().manual_seed(1))
    identity = epsilon_loss(lambda x, sigma: x, x0, sigmas, torch.Generator().manual_seed(1))
    assert float(exact) < 1e-10
    assert 0.5 < float(identity) < 2.0


def test_tuning_windows_are_random_contiguous_and_leave_whole_clip_runs_unchanged():
    from vrwkv_editor.vrwkv.tuning import draw_window
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert draw_window(g, 24, 0) == 0 and draw_window(g, 24, 24) == 0 and draw_window(g, 8, 16) == 0
    assert torch.equal(g.get_state(), state)           # no draw: a window-0 run is the run it was before
    starts = [draw_window(g, 24, 8) for _ in range(200)]
    assert min(starts) == 0 and max(starts) == 16      # every window inside the clip, both ends reached
    again = torch.Generator().manual_seed(5)
    assert [draw_window(again, 24, 8) for _ in range(200)] == starts


class Control:
    """ComfyUI's ControlBase protocol as window_conds uses it: copy() copies the settings but
    not the chain (ControlNetApply links copies with set_previous_controlnet)."""

    def __init__(self, hint, previous=None, extra=()):
        self.cond_hint_original, self.previous_controlnet, self.extra_concat_orig = hint, previous, list(extra)

    def copy(self):
        return Control(self.cond_hint_original, None, self.extra_concat_orig)

    def set_previous_controlnet(self, control):
        self.previous_controlnet = control
        return self


def test_window_conds_cut_everything_per_frame_to_the_window():
    """Per-frame prompts, masks, ControlNet hints (each control of a chain, and their extra
    concat inputs) reach a tuning window cut to its frames; shared ones stay as they are, and
    the guider's own conds and controls are not changed."""
    from vrwkv_editor.nodes.trainer import window_conds

    class Cond:                                        # ComfyUI's CONDRegular protocol
        def __init__(self, cond):
            self.cond = cond

        def _copy_with(self, cond):
            return Cond(cond)

    frame_ids = torch.arange(10.0)[:, None, None, None]
    per_frame, shared = Cond(torch.arange(10.0)[:, None]), Cond(torch.ones(1, 3))
    first = Control(frame_ids.expand(10, 3, 8, 8), extra=[frame_ids.expand(10, 1, 8, 8), torch.ones(1, 1, 1, 1)])
    second = Control(torch.ones(1, 3, 8, 8)).set_previous_controlnet(first)
    entry = {"model_conds": {"c_crossattn": per_frame, "other": shared}, "strength": 1.0,
             "mask": torch.arange(10.0)[:, None, None].expand(10, 4, 4), "control": second}
    cut = window_conds({"positive": [entry]}, 10, 3, 7)["positive"][0]
    assert cut["model_conds"]["c_crossattn"].cond[:, 0].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert cut["model_conds"]["other"] is shared and cut["strength"] == 1.0
    assert cut["mask"][:, 0, 0].tolist() == [3.0, 4.0, 5.0, 6.0]
    control = cut["control"]
    assert control is not second and control.cond_hint_original is second.cond_hint_original     # batch 1: shared
    hint = control.previous_controlnet.cond_hint_original
    assert hint[:, 0, 0, 0].tolist() == [3.0, 4.0, 5.0, 6.0]
    extra = control.previous_controlnet.extra_concat_orig
    assert extra[0][:, 0, 0, 0].tolist() == [3.0, 4.0, 5.0, 6.0] and extra[1].shape[0] == 1
    assert entry["model_conds"]["c_crossattn"] is per_frame and entry["control"] is second     # the guider's own
    assert second.previous_controlnet is first and first.cond_hint_original.shape[0] == 10
