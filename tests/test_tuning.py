"""The tuning loop on a miniature UNet with VRWKV blocks and a synthetic moving clip."""

import pytest
import torch

from tiny_unet import TinyUNet
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch
from vrwkv_editor.vrwkv.tuning import NonFiniteLoss, TuneSettings, draw_noise, tune

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
    """A frozen TinyUNet, a VRWKV patch on it, the clip and a context."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.unet = TinyUNet(c=8)
        self.unet.requires_grad_(False)
        self.patch = VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(self.unet), "skip+mid", 0, hidden_ratio=2)))
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


def test_loss_curve_image():
    from vrwkv_editor.nodes.plots import as_image_tensor, loss_curve
    image = as_image_tensor(loss_curve([1.0, 0.8, 0.9, 0.5, 0.4] * 10))
    assert image.shape == (1, 256, 512, 3) and 0 <= image.min() and image.max() <= 1
    assert (image[0, 20:220, 40:500].std(dim=(0, 1)) > 0.02).any()      # something was drawn
    assert as_image_tensor(loss_curve([])).shape == (1, 256, 512, 3)


def test_training_dtype_choice():
    from vrwkv_editor.nodes.tune import resolve_dtype
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32          # bf16 autocast is slow on CPUs
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("float32", cpu) == torch.float32


def test_checkpointed_recompute_sees_the_transformer_options_of_its_call():
    """The UNet rewrites one transformer_options dict as it goes; a patch looked up by block
    must get the same block when backward recomputes the layer."""
    from vrwkv_editor.nodes.tune import checkpointed
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
