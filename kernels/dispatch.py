"""`bi_wkv`: validation and backend choice.

"auto" serves a device and dtype with Triton only after self_check.py passed there (else
torch, with one logged line); "triton" runs the kernels unchecked. No call reads a value
back from the GPU: w and u are checked for finiteness on the CPU only (tuning checks its
loss every step and weights files are checked when loaded).
"""

import logging
import os

import torch

from .function import BiWKVFunction
from .naive import bi_wkv_naive
from .self_check import self_check
from .torch_scan import bi_wkv_bwd_torch, bi_wkv_fwd_torch

BACKENDS = ("auto", "torch", "triton", "naive")
_TORCH_IMPL = (bi_wkv_fwd_torch, bi_wkv_bwd_torch)
_log = logging.getLogger("vrwkv_editor")
_notified = set()
_verdicts = {}      # (device, dtype) -> None when Triton passed its self-check, else the reason
MAX_GRID_Z = 65535  # CUDA's limit on the third grid dimension, where the kernels put B


def _notice_once(key: str, message: str) -> None:
    if key not in _notified:
        _notified.add(key)
        _log.warning(message)


def triton_status():
    """(launchers, None) when the Triton backend can run, else (None, reason). Imports triton
    here, on first use, so the package loads without it."""
    try:
        import triton
    except ImportError:
        return None, "triton is not installed"
    major = int(triton.__version__.split(".")[0])
    if major < 3:
        return None, f"triton {triton.__version__} is too old (need >= 3.0)"
    from . import triton_chunked
    return (triton_chunked.bi_wkv_fwd_triton, triton_chunked.bi_wkv_bwd_triton), None


def _validate(w, u, k, v):
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"bi_wkv: {name} must be a tensor of shape (B, L, C), got {shape}")
        if not t.is_floating_point():
            raise ValueError(f"bi_wkv: {name} must be a floating tensor, got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"bi_wkv: k and v must have the same shape (B, L, C), got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.dtype != v.dtype:
        raise ValueError(f"bi_wkv: k and v must have the same dtype, got {k.dtype} and {v.dtype}")
    B, L, C = k.shape
    if B == 0 or L == 0 or C == 0:
        raise ValueError(f"bi_wkv: k has an empty dimension {tuple(k.shape)}; need B, L, C >= 1")
    for name, t in (("w", w), ("u", u)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (C,):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"bi_wkv: {name} must have shape (C,) = ({C},) to match k's channels, got {shape}")
        if not t.is_cuda and not torch.isfinite(t).all():
            raise ValueError(f"bi_wkv: {name} holds non-finite values; the decay and bonus parameters "
                             "have diverged (lower the learning rate or reload the weights)")
    for name, t in (("v", v), ("w", w), ("u", u)):
        if t.device != k.device:
            raise ValueError(f"bi_wkv: {name} is on {t.device} but k is on {k.device}; move them to one device")


def _auto_uses_triton(k: torch.Tensor) -> bool:
    return k.is_cuda and k.dtype != torch.float64 and k.shape[0] <= MAX_GRID_Z


def _checked_triton(k: torch.Tensor):
    """Triton's launchers if they passed their self-check on k's device and dtype, else None."""
    impl, reason = triton_status()
    if impl is None:
        _notice_once("no-triton", f"VRWKV: {reason}; Bi-WKV falls back to the PyTorch backend (slower on GPU).")
        return None
    key = (k.device, k.dtype)
    if key not in _verdicts:
        from .triton_chunked import default_config
        _verdicts[key] = self_check(impl, _TORCH_IMPL, default_config(), k.device, k.dtype)
        if _verdicts[key] is not None:
            _log.warning(f"VRWKV: the Triton Bi-WKV kernels failed their self-check on {k.device} {k.dtype} "
                         f"({_verdicts[key]}); using the PyTorch backend there from now on.")
    return impl if _verdicts[key] is None else None


def _resolve(backend: str, k: torch.Tensor):
    """The (forward, backward) launchers for a backend name, or None for "naive"."""
    if backend not in BACKENDS:
        raise ValueError(f"bi_wkv: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "naive":
        return None
    if backend == "torch":
        return _TORCH_IMPL
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        impl, reason = triton_status()
        if impl is None:
            raise ValueError(f"bi_wkv: backend 'triton' is unavailable ({reason}); use backend='torch'")
        if not (k.is_cuda or interpret):
            raise ValueError("bi_wkv: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                             "use backend='torch' or 'auto'")
        if k.dtype == torch.float64:
            raise ValueError("bi_wkv: backend 'triton' serves fp32/fp16/bf16; use backend='torch' for float64")
        if k.shape[0] > MAX_GRID_Z:
            raise ValueError(f"bi_wkv: backend 'triton' takes at most {MAX_GRID_Z} sequences per call, got "
                             f"{k.shape[0]}; use backend='torch' or 'auto'")
        return impl
    # auto
    return (_checked_triton(k) if _auto_uses_triton(k) else None) or _TORCH_IMPL


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Bidirectional WKV over the L axis of k, v (B, L, C); w, u (C,): per-token decay and
    bonus (any sign). y (B, L, C) in k's dtype, accumulated in fp32 (float64 for float64);
    differentiable in all four inputs on every backend."""
    _validate(w, u, k, v)
    impl = _resolve(backend, k)
    if impl is None:
        return bi_wkv_naive(w.to(k.dtype), u.to(k.dtype), k, v)
    return BiWKVFunction.apply(w, u, k, v, impl)
