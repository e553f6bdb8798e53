"""Bi-WKV, the bidirectional RWKV token mixer, with selectable backends (dispatch.py):

    y[t] = ( sum_{i != t} exp(-(|t-i|-1)*w + k[i]) * v[i] + exp(u + k[t]) * v[t] )
         / ( sum_{i != t} exp(-(|t-i|-1)*w + k[i])        + exp(u + k[t]) )

"naive" (dense O(L^2) oracle, tests only), "torch" (O(L), any device), "triton" (chunked
kernels; CUDA, or CPU under TRITON_INTERPRET=1), "auto" (self-checked triton on CUDA, else torch).
"""

from .dispatch import BACKENDS, bi_wkv, triton_status
from .naive import bi_wkv_naive

__all__ = ["bi_wkv", "bi_wkv_naive", "BACKENDS", "triton_status"]
