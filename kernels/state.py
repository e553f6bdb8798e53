"""Bi-WKV state across window boundaries: a long sequence processed window by window.

A window [s, e) needs, per channel, P = sum_{i<s} exp(-(s-1-i)*w + k[i]) * [v[i], 1] and
the mirror sum F of the tokens after it. These weigh the window exactly as a token at s-1
(or e) with key log(P_den) and value P_num / P_den would, so a state is that pseudo-token,
(key, value) each (B, C), and the window runs as bi_wkv on [past, window, future].
"""

import torch

from . import bi_wkv


def bi_wkv_window(w, u, k, v, past=None, future=None, *, backend: str = "auto") -> torch.Tensor:
    """bi_wkv on a window (B, L, C) of a longer sequence; `past` / `future` are the states
    (key, value), each (B, C), of everything before / after it (None: nothing there)."""
    ks, vs = [k], [v]
    if past is not None:
        ks.insert(0, past[0].to(k.dtype)[:, None])
        vs.insert(0, past[1].to(v.dtype)[:, None])
    if future is not None:
        ks.append(future[0].to(k.dtype)[:, None])
        vs.append(future[1].to(v.dtype)[:, None])
    if len(ks) == 1:
        return bi_wkv(w, u, k, v, backend=backend)
    y = bi_wkv(w, u, torch.cat(ks, 1), torch.cat(vs, 1), backend=backend)
    return y[:, int(past is not None): y.shape[1] - int(future is not None)]


def _pseudo_token(logits, v):
    """(logsumexp of logits, their softmax-weighted mean of v) over dim 1; overwrites logits
    (the states are taken while the UNet's activations are alive)."""
    top = logits.amax(1)
    weights = logits.sub_(top[:, None]).exp_()
    den = weights.sum(1)
    return top + den.log(), torch.linalg.vecdot(weights, v, dim=1) / den


def past_state(w, k, v, end: int, past=None):
    """The state entering position `end` of the window k, v (B, L, C), from its tokens
    [0, end) and the `past` state that entered the window."""
    acc = torch.float64 if torch.float64 in (w.dtype, k.dtype) else torch.float32
    w, k, v = w.to(acc), k[:, :end].to(acc), v[:, :end].to(acc)
    logits = k - torch.arange(end - 1, -1, -1, device=k.device, dtype=acc)[:, None] * w
    if past is not None:
        logits = torch.cat([(past[0].to(acc) - end * w)[:, None], logits], 1)
        v = torch.cat([past[1].to(acc)[:, None], v], 1)
    return _pseudo_token(logits, v)


def future_state(w, k, v, start: int, future=None):
    """The state entering position `start - 1` from after, from tokens [start, L) of k, v
    (B, L, C) and the `future` state that entered the window (the reversed past_state)."""
    return past_state(w, k[:, start:].flip(1), v[:, start:].flip(1), k.shape[1] - start, future)
