"""Bi-WKV state across windows against the dense oracle on the whole sequence: a window
with exact state from both sides is the whole-sequence result, and states chain from
window to window."""

import pytest
import torch

from vrwkv_editor.kernels import bi_wkv_naive
from vrwkv_editor.kernels.state import bi_wkv_window, future_state, past_state


def inputs(B, L, C, w_scale, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(C, generator=g, dtype=torch.float64) * w_scale
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k = torch.randn(B, L, C, generator=g, dtype=torch.float64) * 3
    v = torch.randn(B, L, C, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (w, u, k, v)]


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("w_scale", [0.3, 2.0, -0.2], ids=["w-small", "w-large", "w-negative"])
@pytest.mark.parametrize("backend", ["torch", "naive"])
def test_window_with_exact_states_equals_whole_sequence(w_scale, backend):
    w, u, k, v = inputs(2, 40, 5, w_scale)
    whole = bi_wkv_naive(w, u, k, v)
    s, e = 11, 29
    past = past_state(w, k, v, s)                               # tokens [0, s)
    future = future_state(w, k[:, e - 1:], v[:, e - 1:], 1)      # tokens [e, L), seen from e - 1
    y = bi_wkv_window(w, u, k[:, s:e], v[:, s:e], past, future, backend=backend)
    assert rel_err(y, whole[:, s:e]) < 1e-12
    # one side only: the first and the last window of a clip
    assert rel_err(bi_wkv_window(w, u, k[:, :e], v[:, :e], None, future, backend=backend), whole[:, :e]) < 1e-12
    assert rel_err(bi_wkv_window(w, u, k[:, s:], v[:, s:], past, None, backend=backend), whole[:, s:]) < 1e-12
    # and without the states it is not the whole-sequence result (the test can tell)
    assert rel_err(bi_wkv_window(w, u, k[:, s:e], v[:, s:e], backend=backend), whole[:, s:e]) > 1e-3


def test_states_chain_across_overlapping_windows():
    """Windows [0, 16), [10, 26), [20, 36), [30, 40): each window hands the next the past
    state at the next one's start (from its own tokens and the state it received), and the
    previous one the future state at that one's end. Chained this way both equal the states
    over the whole sequence."""
    w, u, k, v = inputs(1, 40, 4, 0.5, seed=3)
    windows = [(0, 16), (10, 26), (20, 36), (30, 40)]
    past = None
    for (s, e), (s_next, _) in zip(windows, windows[1:]):
        past = past_state(w, k[:, s:e], v[:, s:e], s_next - s, past)
        ref = past_state(w, k, v, s_next)
        assert all(rel_err(a, b) < 1e-12 for a, b in zip(past, ref))
    future = None
    for (s_prev, e_prev), (s, e) in zip(reversed(windows[:-1]), reversed(windows[1:])):
        future = future_state(w, k[:, s:e], v[:, s:e], e_prev - s, future)
        ref = future_state(w, k[:, e_prev - 1:], v[:, e_prev - 1:], 1)
        assert all(rel_err(a, b) < 1e-12 for a, b in zip(future, ref))


def test_states_stay_finite_for_long_sequences_and_large_keys():
    w, u, k, v = inputs(1, 4096, 3, 1e-3, dtype=torch.float32)
    k = k * 20                                                 # |k| up to ~200
    past = past_state(w, k, v, 4096)
    assert all(torch.isfinite(t).all() for t in past)
    y = bi_wkv_window(w, u, k[:, :64], v[:, :64], past, None, backend="torch")
    assert torch.isfinite(y).all()
