"""The Triton kernels against the dense oracle: values and all four gradients, through
both in-chunk forms (matmul and exact scan).

Without a GPU they run in Triton's interpreter (set up in conftest.py) with the small
interpreter tile configuration, which puts many chunk and block boundaries into short
sequences; test_triton_compile.py checks that the GPU configuration compiles."""

import pytest
import torch

from test_bi_wkv_torch import make_inputs, max_rel_err, oracle
from vrwkv_editor.kernels import bi_wkv, triton_status
from vrwkv_editor.kernels import triton_chunked as tc

pytestmark = pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(w, u, k, v, gy, cfg=None):
    """y and the four gradients from the launchers (cfg: a tile configuration, default the
    device's)."""
    if cfg is None:
        args = [t.detach().to(DEVICE).requires_grad_(True) for t in (w, u, k, v)]
        y = bi_wkv(*args, backend="triton")
        grads = torch.autograd.grad(y, args, gy.to(device=DEVICE, dtype=y.dtype))
        return y.cpu(), [g.cpu() for g in grads]
    w, u, k, v = (t.detach().to(DEVICE) for t in (w, u, k, v))
    w, u = w.float(), u.float()
    y, saved = tc.bi_wkv_fwd_triton(w, u, k, v, cfg)
    grads = tc.bi_wkv_bwd_triton(w, u, k, v, y, saved, gy.to(DEVICE, k.dtype), cfg)
    return y.cpu(), [g.cpu() for g in grads]


def forced(form):
    """The device's tile configuration with every tile sent to one in-chunk form."""
    limit = float("inf") if form == "matmul" else -1.0
    return tc.default_config()._replace(span=limit, bonus=limit, growth=limit)


def assert_close(y, grads, y_ref, g_ref, y_tol=1e-5, g_tol=1e-4):
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    assert max_rel_err(y, y_ref) < y_tol
    for name, g, r in zip("wukv", grads, g_ref):
        assert max_rel_err(g, r) < g_tol, name


@pytest.mark.parametrize("B,L,C,w_scale", [
    (1, 1, 4, 1.0),        # a single token: only the bonus term
    (2, 2, 5, 1.0),
    (3, 17, 33, 0.05),     # odd C, several channel blocks and chunks
    (1, 70, 3, 1.0),       # 9 chunks in 3 blocks, the last chunk and block partial
    (1, 257, 3, 0.2),      # 33 chunks, 9 blocks: 3 steps of the block scan
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


@pytest.mark.parametrize("w_value", [0.0, 0.01, -0.01, 40.0, -1.0])
def test_triton_extreme_keys(w_value):
    """|k| up to 60 with zero, small, large and negative decay: finite and equal to the
    oracle (the first three take the matmul form, the last two the exact scan)."""
    B, L, C = 1, 40, 2
    w, u, k, v = make_inputs(B, L, C, dtype=torch.float32)
    with torch.no_grad():
        w.fill_(w_value)
        k.copy_(torch.linspace(-60, 60, B * L * C).reshape(B, L, C)[:, torch.randperm(L, generator=torch.Generator().manual_seed(3))])
    gy = torch.ones(B, L, C, dtype=torch.float64)
    assert_close(*run_triton(w, u, k, v, gy), *oracle(w, u, k, v, gy))


@pytest.mark.parametrize("form", ["matmul", "scan"])
@pytest.mark.parametrize("B,L,C,decay", [(2, 72, 9, (-5.0, 5.0)), (1, 45, 9, (-8.0, 40.0)), (1, 40, 2, (0.0, 0.0))],
                         ids=str)
def test_both_in_chunk_forms_match_the_oracle(form, B, L, C, decay):
    """Each form alone, on inputs the matmul form may serve (w = decay / L as the blocks
    pass it, keys up to |60| in the last case): the scan is exact everywhere, the matmul
    form wherever the dispatch sends tiles to it."""
    w, u, k, v = make_inputs(B, L, C, k_scale=2.0, dtype=torch.float32)
    with torch.no_grad():
        w.copy_(torch.linspace(*decay, C) / L)
        if decay == (0.0, 0.0):
            k.copy_(torch.linspace(-60, 60, B * L * C).reshape(B, L, C))
    gy = torch.randn(B, L, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_close(*run_triton(w, u, k, v, gy, forced(form)), *oracle(w, u, k, v, gy))


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_matmul_form_alone_fails_where_the_dispatch_sends_the_scan():
    """Decay 40 per token: rescaling a chunk by one reference would under- and overflow
    (e^{40 * BT}); the matmul form alone is far off, the dispatch's choice is exact."""
    B, L, C = 1, 40, 2
    w, u, k, v = make_inputs(B, L, C, dtype=torch.float32)
    with torch.no_grad():
        w.fill_(40.0)
    gy = torch.ones(B, L, C, dtype=torch.float64)
    y_ref, g_ref = oracle(w, u, k, v, gy)
    y, grads = run_triton(w, u, k, v, gy, forced("matmul"))
    assert not (torch.isfinite(y).all() and max_rel_err(y, y_ref) < 1e-2)
    assert_close(*run_triton(w, u, k, v, gy), y_ref, g_ref)


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


def test_gpu_tile_configuration_across_blocks():
    """The tiles GPUs run (64-token chunks, 16-channel programs: [64, 64] x [64, 16]
    matmuls) over three steps of the block scan (two chunks per block here, so the
    sequence stays short), the last block and chunk partial, w*L of both signs."""
    cfg = tc.GPU_CONFIG._replace(nb=2)
    B, L, C = 1, 2 * cfg.bt * cfg.nb * cfg.nb + cfg.bt + 8, 3
    w, u, k, v = make_inputs(B, L, C, k_scale=2.0, dtype=torch.float32)
    with torch.no_grad():
        w.copy_(torch.tensor([-2.0, 0.5, 4.0]) / L)
    gy = torch.randn(B, L, C, dtype=torch.float64)
    assert_close(*run_triton(w, u, k, v, gy, cfg), *oracle(w, u, k, v, gy))


def test_forward_keeps_no_normaliser_for_the_backward():
    """Between forward and backward only the inputs, y and the chunk carries (6 values per
    chunk and channel) are kept: the backward recomputes den and y, so nothing of y's
    size in fp32 waits through the rest of the UNet."""
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
