"""The Triton kernels against the dense oracle: values and all four gradients.

Without a GPU they run in Triton's interpreter (set up in conftest.py) with the small
interpreter tile configuration, which puts many chunk and carry-block boundaries into
short sequences; test_triton_compile.py checks that the GPU configuration compiles."""

import pytest
import torch

from test_bi_wkv_torch import make_inputs, max_rel_err, oracle
from vrwkv_editor.kernels import bi_wkv, triton_status
from vrwkv_editor.kernels import triton_chunked as tc

pytestmark = pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(w, u, k, v, gy):
    args = [t.detach().to(DEVICE).requires_grad_(True) for t in (w, u, k, v)]
    y = bi_wkv(*args, backend="triton")
    grads = torch.autograd.grad(y, args, gy.to(device=DEVICE, dtype=y.dtype))
    return y.cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("B,L,C,w_scale", [
    (1, 1, 4, 1.0),        # a single token: only the bonus term
    (2, 2, 5, 1.0),
    (3, 17, 33, 0.05),     # odd C, several channel blocks and chunks
    (1, 70, 3, 1.0),       # 9 chunks in 3 carry blocks, partial last chunk
    (1, 257, 3, 0.2),      # 33 chunks in 9 carry blocks
    (2, 45, 2, -0.4),      # negative decay: weights grow with distance
], ids=str)
def test_triton_matches_oracle(B, L, C, w_scale):
    w, u, k, v = make_inputs(B, L, C, w_scale=w_scale, k_scale=2.0, dtype=torch.float32)
    gy = torch.randn(B, L, C, dtype=torch.float64)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    y, grads = run_triton(w, u, k, v, gy)
    assert y.dtype == torch.float32
    assert max_rel_err(y, y_ref) < 1e-5
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g, r) < 1e-4, name


@pytest.mark.parametrize("w_value", [0.0, 40.0, -1.0])
def test_triton_extreme_keys(w_value):
    """|k| up to 60, zero / large / negative decay: finite and equal to the oracle."""
    B, L, C = 1, 40, 2
    w, u, k, v = make_inputs(B, L, C, dtype=torch.float32)
    with torch.no_grad():
        w.fill_(w_value)
        k.copy_(torch.linspace(-60, 60, B * L * C).reshape(B, L, C)[:, torch.randperm(L, generator=torch.Generator().manual_seed(3))])
    gy = torch.ones(B, L, C, dtype=torch.float64)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    y, grads = run_triton(w, u, k, v, gy)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    assert max_rel_err(y, y_ref) < 1e-5
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g, r) < 1e-4, name


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_triton_half_inputs(dtype, tol):
    w, u, k, v = make_inputs(2, 20, 3, w_scale=0.3, dtype=dtype)
    gy = torch.randn(2, 20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y_ref, g_ref = oracle(w, u, k, v, gy)
    y, grads = run_triton(w, u, k, v, gy)
    assert y.dtype == dtype and grads[2].dtype == dtype
    assert max_rel_err(y, y_ref) < tol
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g, r) < tol, name    # the backward keeps y in fp32 (was 5x looser)


def test_gpu_tile_configuration_across_carry_blocks():
    """The tiles GPUs run (32-token chunks, 32 chunks per carry block, 32/16-channel
    programs) over three carry blocks, the last one and its last chunk partial, with w*L
    of both signs: the carry loop every real clip uses (4096 tokens per frame at 512 px)."""
    cfg = tc.GPU_CONFIG
    B, L, C = 1, 2 * cfg.bt * cfg.nb + cfg.bt + 8, 3
    w, u, k, v = make_inputs(B, L, C, k_scale=2.0, dtype=torch.float32)
    with torch.no_grad():
        w.copy_(torch.tensor([-2.0, 0.5, 4.0]) / L)
    gy = torch.randn(B, L, C, dtype=torch.float64)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    w, u, k, v = (t.detach().to(DEVICE) for t in (w, u, k, v))
    y, saved = tc.bi_wkv_fwd_triton(w, u, k, v, cfg)
    grads = tc.bi_wkv_bwd_triton(w, u, k, v, y, saved, gy.to(DEVICE, torch.float32), cfg)
    assert max_rel_err(y.cpu(), y_ref) < 1e-5
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g.cpu(), r) < 1e-4, name


def test_forward_keeps_no_normaliser_for_the_backward():
    """Between forward and backward only the inputs, y and the chunk carries (6 values per
    chunk and channel) are kept: the backward recomputes the normaliser, so nothing of
    y's size in fp32 waits through the rest of the UNet."""
    B, L, C = 2, 40, 5
    w, u, k, v = [t.detach().to(DEVICE).requires_grad_(True) for t in make_inputs(B, L, C, dtype=torch.float32)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = bi_wkv(w, u, k, v, backend="triton")
    own = {t.data_ptr() for t in (w, u, k, v, y)}
    extra = sum(t.numel() for t in saved if t.data_ptr() not in own)
    assert extra == 6 * B * -(-L // tc.default_config().bt) * C


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_launch_on_the_tensors_device():
    """Tensors on cuda:1 while cuda:0 is current: Triton launches on the current device
    unless the launchers switch to the tensors' own."""
    w, u, k, v = make_inputs(2, 300, 40, w_scale=0.05, dtype=torch.float32)
    gy = torch.randn(2, 300, 40, dtype=torch.float64)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    args = [t.detach().to("cuda:1").requires_grad_(True) for t in (w, u, k, v)]
    with torch.cuda.device(0):
        y = bi_wkv(*args, backend="triton")
        grads = torch.autograd.grad(y, args, gy.to("cuda:1", torch.float32))
    assert max_rel_err(y.cpu(), y_ref) < 1e-5
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g.cpu(), r) < 1e-4, name
