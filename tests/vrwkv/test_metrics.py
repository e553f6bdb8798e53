"""Temporal metrics on synthetic clips whose motion is known: a randomly textured square
translated by a fixed number of pixels per frame over a smooth static background."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clips import STEP, flickering, moving_clip, shuffled
from vrwkv_editor.vrwkv import metrics


def test_flow_of_a_small_clip_finds_the_motion_and_a_still_background():
    clip = moving_clip(32)
    flow = metrics.optical_flow(clip[1], clip[2])
    assert flow.shape == (32, 32, 2)
    inside = flow[5:11, 6:12].reshape(-1, 2)  # the square is at x 4..13, y 3..12 in frame 1
    assert np.allclose(np.median(inside, axis=0), STEP, atol=0.1)
    background = np.ones((32, 32), bool)
    background[:16, :18] = False  # the square in frames 1 and 2, with a margin
    assert np.linalg.norm(flow[background], axis=-1).mean() < 0.1


def test_warp_error_near_zero_for_a_consistent_clip_large_when_shuffled_or_flickering():
    clip = moving_clip()
    consistent, share = metrics.warp_error(clip)
    assert consistent.shape == share.shape == (7,)
    assert consistent.max() < 0.005 and share.min() > 0.8
    assert metrics.warp_error(shuffled(clip))[0].mean() > 10 * consistent.mean() + 0.02
    assert metrics.warp_error(flickering(clip))[0].min() > 0.08


def test_warp_error_counts_only_pixels_whose_flow_passes_the_forward_backward_check(monkeypatch):
    rng = np.random.default_rng(0)
    first = rng.random((32, 32, 3), dtype=np.float32)
    second = rng.random((32, 32, 3), dtype=np.float32)  # the right half: unrelated content
    second[:, 2:16] = first[:, :14]  # the left half: frame 0 moved 2 px right
    forward = np.zeros((32, 32, 2), np.float32)
    forward[..., 0] = 2
    backward = np.zeros((32, 32, 2), np.float32)
    backward[:, :16, 0], backward[:, 16:, 0] = -2, 3  # back and forth: 0 px on the left, 5 px on the right
    monkeypatch.setattr(metrics, "optical_flow", lambda a, b: forward if np.array_equal(a, first) else backward)
    error, share = metrics.warp_error(np.stack([first, second]))
    # Trusted: the left half (round trip 0), less its first 2 columns, whose flow leaves frame 0.
    assert share[0] == pytest.approx(14 / 32)
    assert error[0] == pytest.approx(0.0, abs=1e-6)


def test_flicker_near_zero_for_motion_large_for_a_colour_change():
    clip = moving_clip()
    assert metrics.flicker(clip).max() < 0.003
    changed = flickering(clip)
    expected = np.abs(np.diff(changed.mean(axis=(1, 2)), axis=0)).mean(axis=-1)
    assert np.allclose(metrics.flicker(changed), expected) and expected.min() > 0.1


def test_flow_epe_near_zero_for_the_same_motion_large_for_the_reversed():
    source = moving_clip()
    recoloured = source[..., ::-1].copy()  # another look, the same motion
    assert metrics.flow_epe(recoloured, source).max() < 0.1
    assert metrics.flow_epe(source[::-1].copy(), source).mean() > 0.8


def test_report_against_a_source_twice_the_size_resizes_it():
    edited = moving_clip(32)
    source = moving_clip(64, step=(4, 2))  # the same motion at twice the size
    report = metrics.coherence_report(torch.from_numpy(edited), torch.from_numpy(source))
    assert report.source_resized_from == (64, 64)
    means = report.means()
    assert means["motion_epe"] < 0.3
    assert means["warp_error"] < 0.005 and means["source_warp_error"] < 0.01
    assert "resized from 64x64" in report.summary() and "source" in report.summary()


def test_report_without_source_and_progress():
    calls = []
    report = metrics.coherence_report(moving_clip(frames=4), progress=lambda done, total: calls.append((done, total)))
    assert report.motion_epe is None and report.source_warp_error is None
    assert calls == [(i, 6) for i in range(1, 7)]
    assert set(report.means()) == {"warp_error", "warp_reliable", "flicker"}
    assert "source" not in report.summary()
    calls.clear()
    metrics.coherence_report(moving_clip(frames=3), moving_clip(frames=3), lambda d, t: calls.append((d, t)))
    assert calls == [(i, 8) for i in range(1, 9)]


@pytest.mark.parametrize(
    "edited, source, match",
    [
        (np.zeros((4, 32, 32, 3)), np.zeros((5, 32, 32, 3)), "edited has 4 frames but source has 5"),
        (np.zeros((1, 32, 32, 3)), None, "at least 2 frames"),
        (np.zeros((4, 32, 32, 4)), None, r"\(T, H, W, 3\)"),
        (np.zeros((32, 32, 3)), None, r"\(T, H, W, 3\)"),
        (np.zeros((4, 32, 32, 3)), np.zeros((4, 32, 32)), "source: expected frames shaped"),
    ],
)
def test_bad_input_is_named(edited, source, match):
    with pytest.raises(ValueError, match=match):
        metrics.coherence_report(edited, source)


def test_psnr():
    a = np.zeros((2, 4, 4, 3))
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.psnr(a, a + 0.1) == pytest.approx(20.0)
    assert metrics.psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.01)) == pytest.approx(40.0, abs=1e-4)
    with pytest.raises(ValueError, match="same-shaped"):
        metrics.psnr(a, a[:1])


def test_track_error():
    nan = np.nan
    a = [[0, 0], [1, 1], [nan, nan], [5, 5]]
    b = [[3, 4], [1, 1], [2, 2], [nan, nan]]
    assert metrics.track_error(a, b) == (pytest.approx(2.5), 0.5)
    distance, share = metrics.track_error([[nan, nan]], [[1, 1]])
    assert np.isnan(distance) and share == 0.0
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        metrics.track_error(a, b[:3])


def test_package_imports_without_opencv_and_a_metric_says_what_to_install():
    tools = Path(__file__).resolve().parents[2] / "tools"
    code = (
        "import sys; sys.modules['cv2'] = None; sys.path.insert(0, sys.argv[1]);"
        "from load_pack import load_pack; load_pack(); from vrwkv_editor.vrwkv import metrics; import numpy as np;"
        "metrics.warp_error(np.zeros((2, 8, 8, 3)))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tools)], capture_output=True, text=True)
    assert "ImportError: the video metrics need opencv-python: `pip install opencv-python`" in run.stderr, run.stderr
