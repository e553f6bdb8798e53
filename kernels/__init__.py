"""Bi-WKV, the bidirectional RWKV token mixer, as one function with selectable backends.

    y[t] = ( sum_{i != t} exp(-(|t-i|-1)*w + k[i]) * v[i] + exp(u + k[t]) * v[t] )
         / ( sum_{i != t} exp(-(|t-i|-1)*w + k[i])        + exp(u + k[t]) )

Backends: "naive" (dense O(L^2) oracle, tests only), "torch" (O(L), any device),
"triton" (O(L) chunked kernels; CUDA, or CPU under TRITON_INTERPRET=1), "auto" (triton on
CUDA when importable and self-checked, else torch). Validation and dispatch live in
dispatch.py; triton is imported on first use, so the package imports where it is absent.
"""

from .dispatch import BACKENDS, bi_wkv, triton_status
from .naive import bi_wkv_naive

__all__ = ["bi_wkv", "bi_wkv_naive", "BACKENDS", "triton_status"]
