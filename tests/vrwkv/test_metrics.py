"""Temporal metrics on synthetic clips whose motion is known: a randomly textured square
translated by a fixed number of pixels per frame over a smooth static background."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clips import STEP, flickering, moving_clip, shuffled, textured_clip
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


def half_unreliable_pair(monkeypatch):
    """Two frames whose left half moves 2 px right and whose right half is unrelated content,
    with flows (monkeypatched) that pass the forward-backward check on the left half only."""
    rng = np.random.default_rng(0)
    first = rng.random((32, 32, 3), dtype=np.float32)
    second = rng.random((32, 32, 3), dtype=np.float32)  # the right half: unrelated content
    second[:, 2:16] = first[:, :14]  # the left half: frame 0 moved 2 px right
    forward = np.zeros((32, 32, 2), np.float32)
    forward[..., 0] = 2
    backward = np.zeros((32, 32, 2), np.float32)
    backward[:, :16, 0], backward[:, 16:, 0] = -2, 3  # back and forth: 0 px on the left, 5 px on the right
    monkeypatch.setattr(metrics, "optical_flow", lambda a, b, grey=None: forward if np.array_equal(a, first) else backward)
    return first, second, backward


def test_without_a_source_pixels_whose_flow_fails_the_check_still_count(monkeypatch):
    first, second, backward = half_unreliable_pair(monkeypatch)
    error, share = metrics.warp_error(np.stack([first, second]))
    # Trusted: the left half (round trip 0), less its first 2 columns, whose flow leaves frame 0.
    assert share[0] == pytest.approx(14 / 32)
    warped, _ = metrics._sample(first, backward)
    every_pixel = np.abs(second - warped).mean()
    assert error[0] == pytest.approx(every_pixel, rel=1e-5)
    assert error[0] > 0.15      # the unrelated right half weighs in: left out, the error would be ~0.01


def test_with_a_source_its_occlusions_are_left_out(monkeypatch):
    first, second, _ = half_unreliable_pair(monkeypatch)
    source = np.stack([first, second])
    edited = source + np.float32(0.1) * (np.arange(32) >= 16)[None, None, :, None]   # changed on the right only
    error, share = metrics.warp_error(edited, source)
    assert share[0] == pytest.approx(14 / 32)
    assert error[0] == pytest.approx(0.0, abs=1e-6)    # only the source's reliable pixels count


def test_with_a_source_the_frames_are_warped_by_the_sources_flow():
    """An edit that moves smoothly but not as the source does (the source reversed) is smooth
    by its own flow and far off by the source's; an edit that moves as the source does is not."""
    source = moving_clip()
    reversed_clip = source[::-1].copy()
    assert metrics.warp_error(reversed_clip)[0].mean() < 0.005
    by_source = metrics.warp_error(reversed_clip, source)[0].mean()
    assert by_source > 10 * metrics.warp_error(source, source)[0].mean() + 0.02
    assert metrics.warp_error(source[..., ::-1].copy(), source)[0].max() < 0.005   # recoloured, same motion
    report = metrics.coherence_report(reversed_clip, source).means()
    assert report["warp_error"] == pytest.approx(by_source)
    assert report["own_warp_error"] < 0.005 and report["source_warp_error"] < 0.005


def test_shuffled_textured_clip_separates_from_ordered_with_and_without_source():
    clip = textured_clip()
    alone, against_source = metrics.warp_error(clip)[0].mean(), metrics.warp_error(clip, clip)[0].mean()
    assert metrics.warp_error(shuffled(clip))[0].mean() > 3 * alone
    assert metrics.warp_error(shuffled(clip), clip)[0].mean() > 4 * against_source


def test_the_flow_sees_a_coloured_edge_that_luma_loses():
    """A red square on a grey of the same luma, moving 2 px right per frame: luma shows no
    edge to follow, the clip's principal colour axis does."""
    grey = 0.299 * 0.9 + 0.587 * 0.1 + 0.114 * 0.1
    clip = np.full((3, 32, 32, 3), grey, np.float32)
    for t in range(3):
        clip[t, 10:20, 6 + 2 * t:16 + 2 * t] = (0.9, 0.1, 0.1)
    assert np.ptp(metrics._grey_u8(clip[0])) <= 1
    assert metrics.warp_error(clip)[0].max() < 0.005      # by luma's flow: 0.0135


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


def test_track_error_counts_frames_where_only_one_track_has_the_object():
    nan = np.nan
    a = [[0, 0], [1, 1], [nan, nan], [5, 5], [nan, nan]]
    b = [[3, 4], [1, 1], [2, 2], [nan, nan], [nan, nan]]
    diagonal = np.hypot(32, 32)
    result = metrics.track_error(a, b, (32, 32))
    assert result.distance == pytest.approx((5 + 0 + 2 * diagonal) / 4)     # the frame neither has: left out
    assert result.lost == 0.5 and result.matched == pytest.approx(2.5)
    assert np.isnan(metrics.track_error([[nan, nan]], [[nan, nan]], (32, 32)).distance)
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        metrics.track_error(a, b[:3], (32, 32))
    with pytest.raises(ValueError, match="frame_size"):
        metrics.track_error(a, b, (0, 32))


def test_losing_the_object_scores_worse_than_following_it_off_by_a_pixel():
    reference = np.stack([np.linspace(4, 28, 8), np.full(8, 16.0)], axis=1)
    lost_after_first = np.full_like(reference, np.nan)
    lost_after_first[0] = reference[0]
    off_by_one = reference + [1.0, 0.0]
    lost, followed = (metrics.track_error(t, reference, (32, 32)) for t in (lost_after_first, off_by_one))
    assert lost.distance > followed.distance == pytest.approx(1.0)
    assert lost.lost == pytest.approx(7 / 8) and followed.lost == 0.0
    lost_motion, followed_motion = (metrics.motion_match(t, reference, (32, 32)) for t in (lost_after_first, off_by_one))
    assert lost_motion.displacement > followed_motion.displacement == pytest.approx(0.0)


def test_motion_match_compares_displacements_and_speeds():
    reference = np.stack([np.arange(6) * 3.0, np.zeros(6)], axis=1)           # 3 px per frame
    still = np.zeros((6, 2))
    jumpy = reference.copy()
    jumpy[::2, 1] += 4                                                          # up and down by 4 px
    assert metrics.motion_match(reference, reference, (32, 32)) == (0.0, 3.0, 3.0)
    assert metrics.motion_match(still, reference, (32, 32)) == (pytest.approx(3.0), 0.0, 3.0)
    displacement, speed, _ = metrics.motion_match(jumpy, reference, (32, 32))
    assert displacement == pytest.approx(4.0) and speed == pytest.approx(5.0)


def test_package_imports_without_opencv_and_a_metric_says_what_to_install():
    tools = Path(__file__).resolve().parents[2] / "tools"
    code = (
        "import sys; sys.modules['cv2'] = None; sys.path.insert(0, sys.argv[1]);"
        "from load_pack import load_pack; load_pack(); from vrwkv_editor.vrwkv import metrics; import numpy as np;"
        "metrics.warp_error(np.zeros((2, 8, 8, 3)))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tools)], capture_output=True, text=True)
    assert "ImportError: the video metrics need opencv-python: `pip install opencv-python`" in run.stderr, run.stderr
