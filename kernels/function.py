"""The one autograd.Function over the Bi-WKV launchers of any O(L) backend."""

import torch


class BiWKVFunction(torch.autograd.Function):
    """`impl` is a (forward, backward) pair of launchers:
    forward(w, u, k, v) -> (y, saved); backward(w, u, k, v, y, saved, gy) -> (gw, gu, gk, gv)."""

    @staticmethod
    def forward(ctx, w, u, k, v, impl):
        y, saved = impl[0](w, u, k, v)
        ctx.impl = impl
        ctx.save_for_backward(w, u, k, v, y, *saved)
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, k, v, y, *saved = ctx.saved_tensors
        gw, gu, gk, gv = ctx.impl[1](w, u, k, v, y, tuple(saved), gy)
        return gw, gu, gk, gv, None
