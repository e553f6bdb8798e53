"""BlockConfig.end_percent: sampling runs the blocks only down to a noise level (ComfyUI's
percent_to_sigma), tuning always runs them."""

import math

import pytest
import torch
from test_blocks import make_patch, randomise_outputs, unet_inputs
from vrwkv_editor.vrwkv.ddim import percent_to_sigma

from toyworld.unet import latent_unet


def test_percent_to_sigma_follows_comfyui_discrete_sampling():
    table = torch.linspace(0.03, 14.6, 1000).double()
    half = percent_to_sigma(table, 0.5)                  # timestep 499.5: between the table's 499 and 500
    assert half == pytest.approx(math.sqrt(table[499].item() * table[500].item()), rel=1e-12)
    assert percent_to_sigma(table, 0.0) == math.inf and percent_to_sigma(table, 1.0) == 0.0
    assert percent_to_sigma(table, 0.2) > half > percent_to_sigma(table, 0.8)


def run(unet, x, t, context, opts):
    return unet(x, t, context, dict(opts))


def test_blocks_act_above_end_sigma_and_are_skipped_below_it_except_in_tuning():
    unet = latent_unet()
    patch = make_patch(unet)
    randomise_outputs(patch)
    patch.end_sigma = 1.0
    x, t, context, opts = unet_inputs()
    plain = {**opts}
    patched = {**opts, "patches": {"output_block_patch": [patch]}}
    with torch.no_grad():
        reference = run(unet, x, t, context, plain)
        early = run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 2.0)})
        late = run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 0.5)})
    assert not torch.allclose(early, reference, atol=1e-4)
    assert torch.equal(late, reference)
    tuned = run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 0.5)})     # under autograd
    assert torch.allclose(tuned, run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 2.0)}))
    assert not torch.allclose(tuned, reference, atol=1e-4)
    patch.end_sigma = None
    with torch.no_grad():
        assert torch.allclose(run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 0.5)}), early)
