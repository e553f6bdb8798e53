"""O(L) Bi-WKV in plain PyTorch: forward and explicit backward, any device.

Every decayed sum the operator needs has the form

    past[t]   = sum_{i<t} exp(-(t-1-i)*w + key[i]) * val[i]
    future[t] = sum_{i>t} exp(-(i-t-1)*w + key[i]) * val[i]

Pulling the decay out of the sum turns each one into one `torch.logcumsumexp` (a scan
whose running maximum does the rescaling) over `key[i] + log(val[i]) +- i*w`: no loop
over tokens and no exp of an unbounded value. Values are made non-negative by
subtracting their minimum over the sequence (added back through the sum of the weights
alone), so each sum is one scan, and all sums over one key share one scale: a sum is kept
as `mantissa * exp(scale)` with scale = log(sum of weights). The offset i*w grows with
L*|w|: while that stays small (Vision-RWKV passes w = decay / L) the scans run in float32,
otherwise in float64, exact to ~1e-9 up to L*|w| ~ 1e7. Results come back in the input
dtype.

Backward follows ../shared/reference/vrwkv-spec.md section B: the gradient sums G and H
are the same decayed sums over key -log(den) with values g and g*y, and gw pairs their
future (past) halves with the forward past (future) sums, so no distance-weighted scan
is needed. Only the inputs are saved and the forward sums are recomputed. Channels are
independent, so both passes run over blocks of channels: the float temporaries then
stay a few times the block's size (and in cache), not the whole (B, L, C) tensor's.
"""

import torch

# Largest L*|w| for which float32 scans keep ~1e-6 relative accuracy (the offset's ulp).
FP32_MAX_SPAN = 16.0
# Elements (B * L * channels) per channel block.
BLOCK_ELEMENTS = 1 << 21


def _channel_blocks(shape):
    B, L, C = shape
    per = max(1, min(C, BLOCK_ELEMENTS // (B * L)))
    return [slice(c, min(c + per, C)) for c in range(0, C, per)]


def _acc_dtype(w: torch.Tensor, k: torch.Tensor) -> torch.dtype:
    if k.dtype == torch.float64 or w.dtype == torch.float64:
        return torch.float64
    span = float(w.detach().abs().max()) * k.shape[1]
    return torch.float32 if span <= FP32_MAX_SPAN else torch.float64


def _excl_logsum(z: torch.Tensor, w: torch.Tensor, pos: torch.Tensor, reverse: bool) -> torch.Tensor:
    """log of the past (or future) decayed sum of exp(z), excluding the token itself."""
    out = torch.full_like(z, float("-inf"))
    if not reverse:
        lse = torch.logcumsumexp(z + pos * w, dim=1)                    # sum_{i<=t} e^{z_i + i w}
        out[:, 1:] = lse[:, :-1] - pos[:-1] * w
    else:
        lse = torch.logcumsumexp((z - pos * w).flip(1), dim=1).flip(1)  # sum_{i>=t} e^{z_i - i w}
        out[:, :-1] = lse[:, 1:] + pos[1:] * w
    return out


def _times_exp(mantissa, log_scale):
    """mantissa * e^log_scale, exactly 0 where the mantissa is (an empty sum has scale 0,
    which must not overflow into inf * 0)."""
    return mantissa * torch.exp(torch.where(mantissa == 0, float("-inf"), log_scale))


def _decayed_sums(key, vals, w, pos, reverse):
    """One direction's decayed sums of exp(key)*val for each val, sharing one scale:
    returns (scale, [weights, *vals]) with sum = mantissa * exp(scale); the first mantissa
    (sum of weights alone) is 1, or 0 where the sum is empty."""
    log_w = _excl_logsum(key, w, pos, reverse)
    nonempty = torch.isfinite(log_w)
    scale = torch.where(nonempty, log_w, torch.zeros_like(log_w))
    mantissas = [nonempty.to(key.dtype)]
    for val in vals:
        low = val.amin(dim=1, keepdim=True)
        shifted = _excl_logsum(key + torch.log(val - low), w, pos, reverse)
        mantissas.append((torch.exp(shifted - scale) + low) * mantissas[0])
    return scale, mantissas


def _forward_sums(w, u, k, v):
    """(pos, past, future, y, log den); past/future as _decayed_sums returns them for v."""
    pos = torch.arange(k.shape[1], device=k.device, dtype=k.dtype)[:, None]
    past = _decayed_sums(k, [v], w, pos, reverse=False)
    fut = _decayed_sums(k, [v], w, pos, reverse=True)
    s = u + k
    m = torch.maximum(torch.maximum(past[0], fut[0]), s)
    es = torch.exp(s - m)
    den, num = es, v * es
    for scale, (one, val) in (past, fut):
        den = den + _times_exp(one, scale - m)
        num = num + _times_exp(val, scale - m)
    return pos, past, fut, num / den, m + torch.log(den)


def bi_wkv_fwd_torch(w, u, k, v):
    """Returns (y, saved) with y in k's dtype; nothing extra is saved."""
    acc = _acc_dtype(w, k)
    y = torch.empty_like(k)
    for c in _channel_blocks(k.shape):
        y[..., c] = _forward_sums(w[c].to(acc), u[c].to(acc), k[..., c].to(acc), v[..., c].to(acc))[3]
    return y, ()


def bi_wkv_bwd_torch(w, u, k, v, y, saved, gy):
    """Gradients (gw, gu, gk, gv) of sum(gy * y); the forward sums are recomputed."""
    acc = _acc_dtype(w, k)
    gw, gu = torch.empty_like(w), torch.empty_like(u)
    gk, gv = torch.empty_like(k), torch.empty_like(v)
    for c in _channel_blocks(k.shape):
        gw[c], gu[c], gk[..., c], gv[..., c] = _backward_block(
            *(t.to(acc) for t in (w[c], u[c], k[..., c], v[..., c], gy[..., c])))
    return gw, gu, gk, gv


def _backward_block(w_, u_, k_, v_, g):
    pos, past, fut, y_, lden = _forward_sums(w_, u_, k_, v_)
    gy_ = g * y_
    ek_g = ek_h = gw = 0
    # G (value g) and H (value g*y) over key -log(den); the G/H half summed over t > i pairs
    # with the forward past sums P and the half over t < i with the future sums F:
    # gw = -e^{-w} sum_t [G->_t P_t(v) - H->_t P_t(1) + G<-_t F_t(v) - H<-_t F_t(1)]
    for reverse, (fscale, (f_one, f_v)) in ((True, past), (False, fut)):
        scale, (_, gm, hm) = _decayed_sums(-lden, [g, gy_], w_, pos, reverse)
        ek_g = ek_g + _times_exp(gm, k_ + scale)                        # e^k * G
        ek_h = ek_h + _times_exp(hm, k_ + scale)                        # e^k * H
        gw = gw - _times_exp(gm * f_v - hm * f_one, scale + fscale - w_).sum(dim=(0, 1))
        del scale, gm, hm
    self_w = g * torch.exp(u_ + k_ - lden)                              # g_t * self weight / den_t
    gv = ek_g + self_w
    gk = v_ * ek_g - ek_h + self_w * (v_ - y_)
    gu = (self_w * (v_ - y_)).sum(dim=(0, 1))
    return gw, gu, gk, gv
