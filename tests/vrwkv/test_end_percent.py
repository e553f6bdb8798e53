"""BlockConfig.end_percent and edit_end_percent: sampling runs the blocks only down to a noise
level (ComfyUI's percent_to_sigma), edits (ddim.EDIT_KEY) down to their own; tuning always runs them."""

import math

import pytest
import torch
from test_blocks import make_patch, randomise_outputs, unet_inputs
from vrwkv_editor.vrwkv.config import DEFAULT
from vrwkv_editor.vrwkv.ddim import EDIT_KEY, percent_to_sigma
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch

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
    patch.end_sigmas = (1.0, 1.0)
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
    patch.end_sigmas = (None, None)
    with torch.no_grad():
        assert torch.allclose(run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 0.5)}), early)


def test_edits_end_at_their_own_noise_level():
    unet = latent_unet()
    patch = make_patch(unet)
    randomise_outputs(patch)
    patch.end_sigmas = (1.0, 3.0)            # edits stop the blocks earlier (at a higher noise level)
    x, t, context, opts = unet_inputs()
    patched = {**opts, "patches": {"output_block_patch": [patch]}}
    sigmas = torch.full((6,), 2.0)           # one tensor for both calls: the verdict must not be reused
    with torch.no_grad():
        reference = run(unet, x, t, context, opts)
        plain = run(unet, x, t, context, {**patched, "sigmas": sigmas})
        edit = run(unet, x, t, context, {**patched, "sigmas": sigmas, EDIT_KEY: True})
        early_edit = run(unet, x, t, context, {**patched, "sigmas": torch.full((6,), 4.0), EDIT_KEY: True})
    assert not torch.allclose(plain, reference, atol=1e-4)
    assert torch.equal(edit, reference)
    assert not torch.allclose(early_edit, reference, atol=1e-4)


def test_set_ends_reads_both_fractions_from_the_config():
    table = torch.linspace(0.03, 14.6, 1000).double()
    layout = unet_layout(latent_unet())
    config = DEFAULT.replace(end_percent=0.5, edit_end_percent=0.3)
    patch = VRWKVPatch(VRWKVBlocks(block_spec(layout, config)))
    patch.set_ends(lambda percent: percent_to_sigma(table, percent))
    assert patch.end_sigmas == (percent_to_sigma(table, 0.5), percent_to_sigma(table, 0.3))
    for other, ends in [(config.replace(edit_end_percent=None), (0.5, 0.5)),
                        (config.replace(end_percent=1.0, edit_end_percent=None), (None, None)),
                        (config.replace(end_percent=1.0), (None, 0.3))]:
        patch = VRWKVPatch(VRWKVBlocks(block_spec(layout, other)))
        patch.set_ends(lambda percent: percent_to_sigma(table, percent))
        assert patch.end_sigmas == tuple(e if e is None else percent_to_sigma(table, e) for e in ends)
