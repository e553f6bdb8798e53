""""auto" checks the Triton kernels before it trusts them: a kernel that is wrong only
across chunks, or one that fails to compile, is caught on the first call, reported in
one log line, and the torch backend serves from then on.

On the CPU these run the kernels in Triton's interpreter with a small tile configuration
(so the check input, which spans three carry blocks of whatever configuration is in use,
stays short), and route "auto" to Triton as it is on CUDA."""

import logging

import pytest
import torch

from test_bi_wkv_torch import make_inputs
from vrwkv_editor.kernels import dispatch
from vrwkv_editor.kernels import bi_wkv, triton_status

pytestmark = pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def auto_triton(monkeypatch):
    """"auto" as on CUDA, with fresh verdicts and, on the CPU, tiny tiles."""
    from vrwkv_editor.kernels import triton_chunked as tc
    monkeypatch.setattr(dispatch, "_verdicts", {})
    monkeypatch.setattr(dispatch, "_auto_uses_triton", lambda k: True)
    if DEVICE == "cpu":
        small = tc.Config(bt=4, nb=2, bc=4, bc_carry=4, warps=1)
        monkeypatch.setattr(tc, "default_config", lambda: small)
    return tc


def inputs():
    return [t.detach().to(DEVICE, torch.float32) for t in make_inputs(1, 11, 3, w_scale=0.3)]


class _CarryNotScanned:
    """Stands in for `block_carry_kernel`: launches nothing, so every chunk receives its
    own state instead of the carry from the rest of the sequence. Right within one
    chunk, wrong across chunks."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _DoesNotCompile:
    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise RuntimeError("PTX assembly failed: planted by the test")
        return launch


def test_correct_kernels_pass_and_serve_auto(auto_triton):
    w, u, k, v = inputs()
    y = bi_wkv(w, u, k, v, backend="auto")
    assert dispatch._verdicts == {(k.device, k.dtype): None}
    assert torch.equal(y, bi_wkv(w, u, k, v, backend="triton"))


@pytest.mark.parametrize("kernel,broken,reason", [
    ("block_carry_kernel", _CarryNotScanned(), "is off by"),
    ("chunk_state_kernel", _DoesNotCompile(), "RuntimeError: PTX assembly failed"),
], ids=["wrong-across-chunks", "compile-error"])
def test_broken_kernel_is_caught_and_torch_serves(auto_triton, monkeypatch, caplog, kernel, broken, reason):
    monkeypatch.setattr(auto_triton, kernel, broken)
    w, u, k, v = inputs()
    args = [t.clone().requires_grad_(True) for t in (w, u, k, v)]
    with caplog.at_level(logging.WARNING, logger="vrwkv_editor"):
        y = bi_wkv(*args, backend="auto")
        grads = torch.autograd.grad(y.sum(), args)
        bi_wkv(w, u, k, v, backend="auto")            # the verdict stands: no second check, no second line
    lines = [r.getMessage() for r in caplog.records if "self-check" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0] and "PyTorch backend" in lines[0]
    ref = [t.clone().requires_grad_(True) for t in (w, u, k, v)]
    y_ref = bi_wkv(*ref, backend="torch")
    assert torch.equal(y, y_ref)
    assert all(torch.equal(g, r) for g, r in zip(grads, torch.autograd.grad(y_ref.sum(), ref)))
