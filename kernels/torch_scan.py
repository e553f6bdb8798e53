"""O(L) Bi-WKV in plain PyTorch: forward and explicit backward, any device.

Every decayed sum the operator needs has the form

    past[t]   = sum_{i<t} exp(-(t-1-i)*w + key[i]) * val[i]
    future[t] = sum_{i>t} exp(-(i-t-1)*w + key[i]) * val[i]

Pulling the decay out of the sum turns each one into one `torch.logcumsumexp`
(a scan whose running maximum does the rescaling) over `key[i] +- i*w`:
no loop over tokens, and no exp of an unbounded value. The position offset i*w grows
with L, so the scans run in float64, where it stays exact to ~1e-9 up to L*|w| ~ 1e7;
whatever the input dtype, results are returned in it. A signed value is split into its
positive and negative parts (each a log-sum) and the sums are kept as
`mantissa * exp(scale)` until the final ratio, so neither overflows.

Backward follows ../shared/reference/vrwkv-spec.md section B: the gradient sums G and H
are the same decayed sums over key -log(den) and values g, g*y, and gw is assembled
from products of past and future halves (no distance-weighted scan). Only the inputs
are saved; the forward sums are recomputed, so memory stays O(B*L*C).
"""

import torch

_ACC = torch.float64


def _excl_logsum(z: torch.Tensor, w: torch.Tensor, pos: torch.Tensor, reverse: bool) -> torch.Tensor:
    """log of the past (or future) decayed sum of exp(z), excluding the token itself."""
    if not reverse:
        lse = torch.logcumsumexp(z + pos * w, dim=1)                    # sum_{i<=t} e^{z_i + i w}
        out = torch.full_like(lse, float("-inf"))
        out[:, 1:] = lse[:, :-1] - pos[:-1] * w                         # = log past[t], t >= 1
    else:
        lse = torch.logcumsumexp((z - pos * w).flip(1), dim=1).flip(1)  # sum_{i>=t} e^{z_i - i w}
        out = torch.full_like(lse, float("-inf"))
        out[:, :-1] = lse[:, 1:] + pos[1:] * w                          # = log future[t], t <= L-2
    return out


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _signed_sum(key, val, w, pos, reverse):
    """Decayed sum of exp(key)*val as (mantissa, scale): value = mantissa * exp(scale)."""
    lp = _excl_logsum(key + torch.log(val.clamp(min=0)), w, pos, reverse)
    ln = _excl_logsum(key + torch.log((-val).clamp(min=0)), w, pos, reverse)
    scale = _finite_or_zero(torch.maximum(lp, ln))
    return torch.exp(lp - scale) - torch.exp(ln - scale), scale


def _forward_sums(w, u, k, v):
    """Past/future sums of the forward pass and the output, all in float64."""
    pos = torch.arange(k.shape[1], device=k.device, dtype=_ACC)[:, None]
    p1 = _excl_logsum(k, w, pos, reverse=False)          # log past den
    f1 = _excl_logsum(k, w, pos, reverse=True)           # log future den
    pv = _signed_sum(k, v, w, pos, reverse=False)
    fv = _signed_sum(k, v, w, pos, reverse=True)
    s = u + k
    m = torch.maximum(torch.maximum(p1, f1), s)
    den = torch.exp(p1 - m) + torch.exp(f1 - m) + torch.exp(s - m)
    num = pv[0] * torch.exp(pv[1] - m) + fv[0] * torch.exp(fv[1] - m) + v * torch.exp(s - m)
    y = num / den
    lden = m + torch.log(den)
    return pos, p1, f1, pv, fv, y, lden


def _cast(*xs):
    return [x.to(_ACC) for x in xs]


def bi_wkv_fwd_torch(w, u, k, v):
    """Returns (y, saved) with y in k's dtype; saved is what the backward needs."""
    y = _forward_sums(*_cast(w, u, k, v))[5]
    return y.to(k.dtype), ()


def bi_wkv_bwd_torch(w, u, k, v, y, saved, gy):
    """Gradients (gw, gu, gk, gv) of sum(gy * y); y and saved are unused (recomputed here)."""
    w64, u64, k64, v64, g = _cast(w, u, k, v, gy)
    pos, p1, f1, pv, fv, y64, lden = _forward_sums(w64, u64, k64, v64)
    key = -lden
    g_past = _signed_sum(key, g, w64, pos, reverse=False)        # G<-: sum over t < i
    g_fut = _signed_sum(key, g, w64, pos, reverse=True)          # G->: sum over t > i
    h_past = _signed_sum(key, g * y64, w64, pos, reverse=False)
    h_fut = _signed_sum(key, g * y64, w64, pos, reverse=True)

    ek_g = g_past[0] * torch.exp(k64 + g_past[1]) + g_fut[0] * torch.exp(k64 + g_fut[1])   # e^k * G
    ek_h = h_past[0] * torch.exp(k64 + h_past[1]) + h_fut[0] * torch.exp(k64 + h_fut[1])   # e^k * H
    self_w = g * torch.exp(u64 + k64 - lden)                     # g_t * (self weight / den_t)
    gv = ek_g + self_w
    gk = v64 * ek_g - ek_h + self_w * (v64 - y64)
    gu = (self_w * (v64 - y64)).sum(dim=(0, 1))

    def product(a, b, extra):                                    # mantissa product, log scales added
        return a[0] * b[0] * torch.exp(a[1] + b[1] + extra)

    def positive(logsum):                                        # a log-sum as (mantissa, scale)
        return torch.isfinite(logsum).to(_ACC), _finite_or_zero(logsum)

    gw = -(product(g_fut, pv, -w64) - product(h_fut, positive(p1), -w64)
           + product(g_past, fv, -w64) - product(h_past, positive(f1), -w64)).sum(dim=(0, 1))
    return gw.to(w.dtype), gu.to(u.dtype), gk.to(k.dtype), gv.to(v.dtype)
