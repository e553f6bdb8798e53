"""The pack inside ComfyUI's own runtime (comfy_runtime_check.py, run under ComfyUI's Python):
half-precision sampling under inference mode, the blocks' end_percent in a sampling run, the
edit mark of the pack's inversion and samplers, context windows across sampling runs and with
CFG, and a ControlNet on the tuning prompt with a tuning window."""

import json
from pathlib import Path

import pytest
import torch

from comfy_server import cached_controlnet, run_comfy_python

CHECK = Path(__file__).resolve().parent / "comfy_runtime_check.py"


@pytest.fixture(scope="module")
def found():
    out = run_comfy_python([CHECK, cached_controlnet("shallow")], timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def test_half_precision_sampling_runs_under_inference_mode_built_and_loaded(found):
    """Blocks built by VRWKV Patch Model under inference mode sample a bfloat16 UNet in
    bfloat16; after other weights are loaded into them they sample exactly as blocks built
    from those weights (their half copy follows the load)."""
    half = found["half"]
    built, reloaded, loaded = (torch.tensor(half[k]) for k in ("built", "reloaded", "loaded"))
    assert half["dtypes"] == ["torch.bfloat16"]
    assert torch.isfinite(built).all() and not torch.equal(built, reloaded)
    assert torch.equal(reloaded, loaded)


def test_blocks_stop_at_comfyui_s_sigma_for_end_percent(found):
    """The default end_percent: the patch stops the blocks at ComfyUI's percent_to_sigma,
    which the pack's own (toy benchmark) conversion reproduces; the first half of a run's
    model calls runs them, the rest skips them."""
    schedule = found["schedule"]
    assert schedule["end_percent"] < 1
    assert schedule["end_sigma"] == pytest.approx(schedule["comfy"], rel=1e-6)
    assert schedule["ours"] == pytest.approx(schedule["comfy"], rel=1e-5)
    verdicts = [skipped for _, skipped in schedule["calls"]]
    assert verdicts[0] is False and verdicts[-1] is True
    assert all(skipped == (sigma < schedule["end_sigma"]) for sigma, skipped in schedule["calls"])


def test_the_pack_s_inversion_and_edit_sampling_tell_the_blocks(found):
    """Every model call of VRWKV DDIM Inversion and of VRWKV KSampler (DDIM) from its
    inverted_latent carries ddim.EDIT_KEY, and SamplerCustom's with VRWKV DDIM's edit on;
    sampling from fresh noise carries none; the MODEL passed in is not marked. Marked calls stop
    the blocks at ComfyUI's sigma for the default edit_end_percent, the others at end_percent's."""
    found = found["edit_marks"]
    runs = ("inversion", "ksampler_from_inversion", "sampler_custom_edit", "ksampler_from_noise", "sampler_custom")
    marks = {run: sorted({marked for marked, _, _ in found[run]}) for run in runs}
    assert marks["inversion"] == marks["ksampler_from_inversion"] == marks["sampler_custom_edit"] == [True]
    assert marks["ksampler_from_noise"] == marks["sampler_custom"] == [False]
    assert found["model_options_marked"] is False
    assert found["end_sigmas"] == pytest.approx(found["comfy"], rel=1e-6)
    assert found["end_sigmas"][1] > found["end_sigmas"][0]          # edits stop the blocks earlier
    calls = [call for run in runs for call in found[run]]
    assert all(skipped == (sigma < found["end_sigmas"][marked]) for marked, sigma, skipped in calls)
    assert {skipped for marked, _, skipped in calls if marked} == {True, False}


def test_a_new_sampling_run_forgets_the_last_runs_states(found):
    """The second run of a cached guider with the same sigmas tensor (what a queued-again
    cached SIGMAS gives) samples exactly as a fresh windowed MODEL does, and no state is left
    once a run is over."""
    runs = found["windows"]
    second, fresh = torch.tensor(runs["second"]), torch.tensor(runs["fresh"])
    assert not torch.equal(torch.tensor(runs["first"]), second)
    assert torch.equal(second, fresh)
    assert runs["store_empty_after_run"]


def test_each_window_gets_its_frames_sigmas_with_cfg(found):
    """cond and uncond batched in one call: each window's transformer_options["sigmas"] has
    one sigma per frame of the window, as ComfyUI passes one per frame of the clip."""
    calls = found["windows"]["calls"]
    assert any(videos == 2 for _, videos, _ in calls)
    assert all(sigmas * videos == batch and sigmas == 4 for batch, videos, sigmas in calls)


def test_controlnet_hint_follows_the_tuning_window(found):
    """With a window of 3 of 8 frames the ControlNet sees the hint frames of the drawn window
    (frame i carries i), not frames 0-2 whatever was drawn; re-tuning with another window
    keeps the first tuning's norm_frames."""
    hints = found["controlnet"]["hints"]
    assert len(hints) == 4
    assert all(h == list(range(h[0], h[0] + 3)) for h in hints)
    assert any(h[0] != 0 for h in hints)
    assert found["controlnet"]["norm_frames"] == [3, 3]
