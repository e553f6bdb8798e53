"""VRWKV Video Coherence without ComfyUI: its outputs from a report, and its run with
stand-ins for comfy.utils / comfy.model_management (progress and interrupt)."""

import math
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch

from clips import flickering, moving_clip
from vrwkv_editor.nodes.coherence import VRWKVVideoCoherence, node_outputs
from vrwkv_editor.vrwkv.metrics import coherence_report


def test_schema():
    spec = VRWKVVideoCoherence.INPUT_TYPES()
    assert list(spec["required"]) == ["edited"] and list(spec["optional"]) == ["source"]
    # saved workflows link outputs by position: new outputs only ever come last
    assert VRWKVVideoCoherence.RETURN_NAMES == ("warp_error", "flicker", "motion_epe", "source_warp_error",
                                                "source_flicker", "summary", "plot", "own_warp_error",
                                                "flow_unreliable")
    assert VRWKVVideoCoherence.RETURN_TYPES == ("FLOAT",) * 5 + ("STRING", "IMAGE") + ("FLOAT",) * 2
    assert len(VRWKVVideoCoherence.OUTPUT_TOOLTIPS) == len(VRWKVVideoCoherence.RETURN_NAMES)


def test_outputs_with_a_source():
    source = moving_clip(frames=6)
    report = coherence_report(flickering(source), source)
    out = node_outputs(report)
    warp, flick, epe, source_warp, source_flick, summary, plot, own_warp, unreliable = out["result"]
    means = report.means()
    assert (warp, flick, epe, source_warp, source_flick) == (means["warp_error"], means["flicker"], means["motion_epe"],
                                                             means["source_warp_error"], means["source_flicker"])
    assert (own_warp, unreliable) == (means["own_warp_error"], 1 - means["warp_reliable"])
    assert warp > 0.05 > source_warp and flick > 0.05 > source_flick and 0 <= unreliable < 0.2
    assert out["ui"]["text"] == [summary] and "motion EPE" in summary and "source's flow" in summary
    names = VRWKVVideoCoherence.RETURN_NAMES
    assert out["ui"]["coherence"] == [{n: v for n, v in zip(names, out["result"]) if n not in ("summary", "plot")}]
    assert plot.shape == (1, 450, 512, 3) and plot.dtype == torch.float32 and 0 <= plot.min() < plot.max() <= 1


def test_outputs_without_a_source_are_nan_and_null_in_the_page_json():
    report = coherence_report(moving_clip(frames=3))
    out = node_outputs(report)
    assert all(math.isnan(v) for v in out["result"][2:5]) and not math.isnan(out["result"][0])
    assert out["result"][7] == out["result"][0]            # own_warp_error is warp_error without a source
    assert out["result"][8] == pytest.approx(1 - report.means()["warp_reliable"])
    assert out["ui"]["coherence"][0]["motion_epe"] is None
    assert out["result"][6].shape == (1, 300, 512, 3)  # two panels: warp error and flicker


@pytest.fixture
def fake_comfy(monkeypatch):
    """comfy.utils.ProgressBar and the interrupt check, recording what the node does."""
    state = SimpleNamespace(updates=[], checks=0, interrupt_after=None)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            state.node_id = node_id

        def update_absolute(self, value, total=None):
            state.updates.append((value, total))

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.interrupt_after is not None and state.checks > state.interrupt_after:
            raise InterruptedError("interrupted")

    comfy = ModuleType("comfy")
    comfy.utils = SimpleNamespace(ProgressBar=ProgressBar)
    comfy.model_management = SimpleNamespace(throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted)
    for name, module in (("comfy", comfy), ("comfy.utils", comfy.utils), ("comfy.model_management", comfy.model_management)):
        monkeypatch.setitem(sys.modules, name, module)
    return state


def test_measure_drives_the_progress_bar(fake_comfy):
    clip = torch.from_numpy(moving_clip(frames=4))
    out = VRWKVVideoCoherence().measure(clip, clip, unique_id="7")
    assert fake_comfy.node_id == "7" and fake_comfy.updates == [(i, 12) for i in range(1, 13)]
    assert out["result"][2] == pytest.approx(0.0, abs=1e-6)  # the same clip moves like itself


def test_measure_stops_when_interrupted(fake_comfy):
    fake_comfy.interrupt_after = 3
    with pytest.raises(InterruptedError):
        VRWKVVideoCoherence().measure(torch.from_numpy(moving_clip(frames=8)))
    assert len(fake_comfy.updates) == 2  # stopped after the 2nd of 14 flows


def test_measure_names_the_node_on_bad_input(fake_comfy):
    with pytest.raises(ValueError, match="VRWKV Video Coherence: edited has 4 frames but source has 3"):
        VRWKVVideoCoherence().measure(torch.zeros(4, 32, 32, 3), torch.zeros(3, 32, 32, 3))
