"""Bi-WKV state across window boundaries: a long sequence processed window by window.

Everything a window needs from the tokens before it is one decayed sum per channel,

    P = sum_{i<s} exp(-(s-1-i)*w + k[i]) * [v[i], 1]      (the past, seen from position s),

and everything after it (from position e on, seen from e-1) is the mirror sum F. Token t of
the window sees them decayed by its distance: exp(-(t-s)*w) * P and exp(-(e-1-t)*w) * F.
That is exactly the weight a single token at position s-1 (or e) with key log(P_den) and
value P_num / P_den would get, so a state is stored as such a pseudo-token (key, value),
each (B, C): the window is then the ordinary operator on [past token, window, future token],
on any backend, and the result equals the whole-sequence one (tests/test_bi_wkv_state.py
checks it against the dense oracle). Keys stay log-sums (logsumexp) and values are means,
so nothing overflows. Inference-only by intent (windows run without gradients), though
autograd would pass through.
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
    """(logsumexp of logits, their softmax-weighted mean of v) over dim 1; works in place on
    logits (one temporary of its size: the states are taken while the UNet's activations live)."""
    top = logits.amax(1)
    weights = logits.sub_(top[:, None]).exp_()
    den = weights.sum(1)
    return top + den.log(), torch.linalg.vecdot(weights, v, dim=1) / den


def past_state(w, k, v, end: int, past=None):
    """The state entering position `end` of the window k, v (B, L, C): tokens [0, end) of
    the window and, if given, the `past` state that entered the window."""
    acc = torch.float64 if torch.float64 in (w.dtype, k.dtype) else torch.float32
    w, k, v = w.to(acc), k[:, :end].to(acc), v[:, :end].to(acc)
    logits = k - torch.arange(end - 1, -1, -1, device=k.device, dtype=acc)[:, None] * w
    if past is not None:
        logits = torch.cat([(past[0].to(acc) - end * w)[:, None], logits], 1)
        v = torch.cat([past[1].to(acc)[:, None], v], 1)
    return _pseudo_token(logits, v)


def future_state(w, k, v, start: int, future=None):
    """The state entering position `start - 1` from after: tokens [start, L) of the window
    k, v (B, L, C) and, if given, the `future` state that entered the window from its end
    (the past state of the reversed window)."""
    return past_state(w, k[:, start:].flip(1), v[:, start:].flip(1), k.shape[1] - start, future)
