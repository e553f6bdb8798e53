"""The PyTorch O(L) backend against the dense oracle: values, all four gradients,
gradcheck, extreme inputs, low precision, and the errors for bad input."""

import pytest
import torch

from vrwkv_editor.kernels import bi_wkv, bi_wkv_naive


def make_inputs(B, L, C, *, w_scale=1.0, k_scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(C, generator=g, dtype=torch.float64) * w_scale
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k = torch.randn(B, L, C, generator=g, dtype=torch.float64) * k_scale
    v = torch.randn(B, L, C, generator=g, dtype=torch.float64)
    return [t.to(dtype).requires_grad_(True) for t in (w, u, k, v)]


def on(device, *tensors):
    """Leaf copies on `device` that require gradients."""
    return [t.detach().to(device).requires_grad_(True) for t in tensors]


def oracle(w, u, k, v, gy):
    args = [t.detach().double().requires_grad_(True) for t in (w, u, k, v)]
    y = bi_wkv_naive(*args)
    return y.detach(), torch.autograd.grad(y, args, gy.double())


def max_rel_err(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def assert_matches_oracle(w, u, k, v, y_tol, g_tol, backend="torch"):
    """Values within y_tol and the four gradients within g_tol of the dense oracle, relative
    to each one's largest magnitude."""
    y = bi_wkv(w, u, k, v, backend=backend)
    gy = torch.randn_like(y)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    assert max_rel_err(y, y_ref) < y_tol
    for name, g, r in zip("wukv", torch.autograd.grad(y, (w, u, k, v), gy), g_ref):
        assert max_rel_err(g, r) < g_tol, name


SHAPES = [(1, 1, 4), (2, 2, 5), (3, 17, 33), (1, 257, 3), (2, 64, 8)]


@pytest.mark.parametrize("B,L,C", SHAPES, ids=lambda s: str(s))
@pytest.mark.parametrize("w_scale", [0.05, 1.0, -0.5], ids=["w-small", "w-unit", "w-negative"])
def test_torch_matches_oracle_float64(B, L, C, w_scale, device):
    assert_matches_oracle(*on(device, *make_inputs(B, L, C, w_scale=w_scale, k_scale=2.0)), 1e-10, 1e-8)


def test_torch_gradcheck():
    w, u, k, v = make_inputs(2, 9, 3, w_scale=0.7)
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, backend="torch"), (w, u, k, v))


@pytest.mark.parametrize("w_value", [0.0, 1e-6, 5.0, 40.0, -2.0])
def test_extreme_keys_and_decays_stay_exact(w_value, device):
    """|k| up to 60 with tiny, zero, large and negative decay: finite and equal to the oracle."""
    B, L, C = 2, 50, 4
    w, u, k, v = make_inputs(B, L, C)
    with torch.no_grad():
        w.fill_(w_value)
        k.copy_(torch.linspace(-60, 60, B * L * C, dtype=torch.float64).reshape(B, L, C)[:, torch.randperm(L)])
    w, u, k, v = on(device, w, u, k, v)
    y = bi_wkv(w, u, k, v, backend="torch")
    gy = torch.ones_like(y)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    grads = torch.autograd.grad(y, (w, u, k, v), gy)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    assert max_rel_err(y, y_ref) < 1e-9
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g, r) < 1e-6, name


def test_long_sequence_is_finite_float32():
    """L = 10^5 in float32 with Vision-RWKV's scaling (w = decay / L): finite, and the
    output is a convex combination of v (within its range)."""
    B, L, C = 1, 100_000, 4
    g = torch.Generator().manual_seed(1)
    k = (torch.randn(B, L, C, generator=g) * 20).requires_grad_(True)
    v = torch.randn(B, L, C, generator=g).requires_grad_(True)
    w = (torch.tensor([-5.0, 0.0, 1.0, 3.0]) / L).requires_grad_(True)
    u = (torch.ones(C) / L).requires_grad_(True)
    y = bi_wkv(w, u, k, v, backend="torch")
    y.sum().backward()
    assert torch.isfinite(y).all()
    assert (y <= v.max() + 1e-5).all() and (y >= v.min() - 1e-5).all()
    for t in (w, u, k, v):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2), (torch.float32, 1e-5)])
def test_low_precision_inputs(dtype, tol, device):
    """Half inputs accumulate in higher precision: the error is that of rounding the
    inputs and the output, and the result comes back in the input dtype."""
    w, u, k, v = on(device, *make_inputs(2, 40, 6, w_scale=0.3, dtype=dtype))
    y = bi_wkv(w, u, k, v, backend="torch")
    assert y.dtype == dtype
    y_ref, _ = oracle(w, u, k, v, torch.ones_like(y))
    assert max_rel_err(y, y_ref) < tol
    y.float().sum().backward()
    assert k.grad.dtype == dtype and torch.isfinite(k.grad.float()).all()


def test_conventions_identity():
    """BiWKV_paper(w, u) == BiWKV_abs(w, u - w) (spec section 0.8): the dense |t-i| form
    written independently agrees with ours after the conversion."""
    w, u, k, v = make_inputs(2, 12, 3)
    L = k.shape[1]
    idx = torch.arange(L)
    dist = (idx[:, None] - idx[None, :]).abs().double()
    logits = -dist[None, :, :, None] * w + k[:, None]
    eye = torch.eye(L, dtype=torch.bool)[None, :, :, None]
    logits = torch.where(eye, k[:, None] + (u - w), logits)
    y_abs = (torch.softmax(logits, dim=2) * v[:, None]).sum(2)
    assert torch.allclose(bi_wkv(w, u, k, v, backend="torch"), y_abs, atol=1e-12)


def test_auto_backend_matches_the_oracle():
    """The default backend (whichever auto picks here) against the dense oracle, in float32:
    values and all four gradients."""
    assert_matches_oracle(*make_inputs(2, 40, 5, k_scale=2.0, dtype=torch.float32), 1e-5, 1e-4, backend="auto")


@pytest.mark.parametrize("case,match", [
    ("k_rank", "k must be a tensor of shape"),
    ("v_shape", "same shape"),
    ("w_shape", r"w must have shape \(C,\)"),
    ("u_nonfinite", "u holds non-finite"),
    ("dtype_mix", "same dtype"),
    ("backend", "backend must be one of"),
    ("int_k", "floating"),
])
def test_bad_input_errors(case, match):
    w, u, k, v = [t.detach() for t in make_inputs(1, 4, 3)]
    kwargs = {}
    if case == "k_rank":
        k = k[0]
    elif case == "v_shape":
        v = v[:, :2]
    elif case == "w_shape":
        w = w[:2]
    elif case == "u_nonfinite":
        u = u.clone()
        u[1] = float("nan")
    elif case == "dtype_mix":
        v = v.float()
    elif case == "backend":
        kwargs["backend"] = "cuda"
    elif case == "int_k":
        k = k.long()
        v = v.long()
    with pytest.raises(ValueError, match=match):
        bi_wkv(w, u, k, v, **kwargs)


def test_triton_backend_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w, u, k, v = [t.detach().float() for t in make_inputs(1, 4, 3)]
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        bi_wkv(w, u, k, v, backend="triton")


def test_channel_blocks_match_one_block(monkeypatch):
    """Long inputs run in blocks of channels; the blocked result equals the oracle."""
    import vrwkv_editor.kernels.torch_scan as torch_scan
    monkeypatch.setattr(torch_scan, "BLOCK_ELEMENTS", 2 * 30 * 2)     # 2 channels per block
    w, u, k, v = make_inputs(2, 30, 7, w_scale=0.5)
    assert len(torch_scan._channel_blocks(k.shape)) == 4
    assert_matches_oracle(w, u, k, v, 1e-10, 1e-8)


def test_chunk_levels_and_scan_pieces_match_oracle(monkeypatch):
    """With chunks of 3 positions, 40 tokens take four levels (40 -> 14 -> 5 -> 2 chunks),
    each with a padded last chunk, and tiny scan pieces split every step: still the oracle."""
    import vrwkv_editor.kernels.torch_scan as torch_scan
    monkeypatch.setattr(torch_scan, "CHUNK", 3)
    monkeypatch.setattr(torch_scan, "STEP_ELEMENTS", 4)
    for w_scale in (0.5, -0.5):
        assert_matches_oracle(*make_inputs(2, 40, 3, w_scale=w_scale, k_scale=3.0), 1e-10, 1e-8)


def test_no_value_is_read_back_from_the_device():
    """Forward and backward run on the meta device, which has no values: the accumulation
    dtype and every branch depend on dtypes and shapes only (no host sync on CUDA)."""
    from vrwkv_editor.kernels.torch_scan import bi_wkv_bwd_torch, bi_wkv_fwd_torch
    w, u = (torch.empty(5, device="meta") for _ in range(2))
    k, v = (torch.empty(2, 70, 5, device="meta", dtype=torch.bfloat16) for _ in range(2))
    y, saved = bi_wkv_fwd_torch(w, u, k, v)
    grads = bi_wkv_bwd_torch(w, u, k, v, y, saved, torch.empty_like(y))
    assert y.shape == k.shape and y.dtype == k.dtype
    assert [g.shape for g in grads] == [w.shape, u.shape, k.shape, v.shape]


def test_float32_error_bound_at_long_length():
    """The float32 bound: at L = 65536 with Vision-RWKV's scaling (decays -5..5
    over L), float32 values and all four gradients within 3e-6 of float64, relative to the
    largest magnitude of each."""
    B, L, C = 1, 65536, 8
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64) / L
    u = torch.randn(C, generator=g, dtype=torch.float64) / L
    k = torch.randn(B, L, C, generator=g, dtype=torch.float64) * 3
    v = torch.randn(B, L, C, generator=g, dtype=torch.float64)
    gy = torch.randn(B, L, C, generator=g, dtype=torch.float64)

    def run(dtype):
        args = [t.to(dtype).requires_grad_(True) for t in (w, u, k, v)]
        y = bi_wkv(*args, backend="torch")
        return [y] + list(torch.autograd.grad(y, args, gy.to(dtype)))

    for name, got, ref in zip(["y", "w", "u", "k", "v"], run(torch.float32), run(torch.float64)):
        assert max_rel_err(got, ref.detach()) < 3e-6, name
