"""O(L) Bi-WKV in plain PyTorch: forward and explicit backward, any device.

Each decayed sum, past[t] = sum_{i<t} exp(-(t-1-i)*w + key[i]) * val[i] and its mirror
future[t], is held as mantissa * exp(scale) with a running-maximum scale: no exp overflows,
whatever the sign of w. Sums run in chunks: chunk totals, carried
between chunks by this same algorithm one level down, then one scan over all chunks at once.
The backward takes the same sums over key -log(den), recomputing the forward from
the states saved per chunk. Accumulates in float32 (float64 for float64 inputs).
"""

import torch

BLOCK_ELEMENTS = 1 << 22   # B * L * channels per channel block: bounds the temporaries
CHUNK = 32                 # positions per chunk
# Elements per CPU scan step: below torch's parallel grain, so the many short steps run on
# the calling thread instead of waiting at a thread barrier each.
STEP_ELEMENTS = 32768
# log-scale of an empty sum: finite, so that exp(NEG - NEG) = 1 and exp(NEG - x) = 0.
NEG = -1e30


def _channel_blocks(shape):
    B, L, C = shape
    per = max(1, min(C, BLOCK_ELEMENTS // (B * L)))
    return [slice(c, min(c + per, C)) for c in range(0, C, per)]


def _acc_dtype(w: torch.Tensor, k: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (w.dtype, k.dtype) else torch.float32


class _Chunks:
    """Token layout (B, L, C) <-> chunk layout (B, T, N, C): token n*T + j is position j of
    chunk n, T = min(L, CHUNK), the last chunk padded; slices along T are contiguous."""

    def __init__(self, L, device, dtype):
        self.L, self.T = L, min(L, CHUNK)
        self.N = -(-L // self.T)
        self.pad = self.N * self.T - L
        self.j = torch.arange(self.T, device=device, dtype=dtype)[:, None, None]   # (T, 1, 1)

    def split(self, x, dtype, fill=0.0):
        """(B, L, C) -> new (B, T, N, C) tensor in dtype; padded positions hold fill."""
        B, L, C = x.shape
        out = torch.empty((B, self.T, self.N, C), device=x.device, dtype=dtype)
        by_chunk = out.transpose(1, 2)                                      # (B, N, T, C) view
        full = L // self.T
        by_chunk[:, :full] = x[:, :full * self.T].view(B, full, self.T, C)
        if self.pad:
            by_chunk[:, full, :self.T - self.pad] = x[:, full * self.T:]
            by_chunk[:, full, self.T - self.pad:] = fill
        return out

    def join(self, xt, out=None):
        """chunk-layout xt (B, T, N, C) -> token layout (B, L, C), written into out if given."""
        B, T, N, C = xt.shape
        if out is None:
            out = xt.new_empty((B, self.L, C))
        by_chunk = xt.transpose(1, 2)
        full = self.L // T
        out[:, :full * T] = by_chunk[:, :full].reshape(B, full * T, C)
        if self.pad:
            out[:, full * T:] = by_chunk[:, full, :T - self.pad]
        return out


def _pieces(a, copies=1):
    """Slices of the chunk axis of a (B, T, N, C) of at most STEP_ELEMENTS per step on the
    CPU; one piece on a GPU (each would be another kernel launch)."""
    B, T, N, C = a.shape
    if a.device.type != "cpu":
        return [slice(None)]
    per = max(1, STEP_ELEMENTS // (copies * B * C))
    return [slice(n, n + per) for n in range(0, N, per)]


def _scan(a, vals, seed_a, seed_m, reverse):
    """Exclusive running-max scan along dim 1 of a = key +- j*w (B, T, N, C), vals (None: 1)
    seeded per chunk by (seed_a, seed_m). Returns A, the largest a before each position, and
    H (nv, B, T, N, C): sum = H * exp(A + decay)."""
    B, T = a.shape[:2]
    # slot s holds the state between positions s-1 and s; the seed sits in slot 0 (T if reverse)
    into, out = (slice(1, None), slice(0, T)) if reverse else (slice(0, T), slice(1, None))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    A = torch.empty((B, T + 1) + a.shape[2:], device=a.device, dtype=a.dtype)
    A[:, T if reverse else 0] = seed_a
    for n in _pieces(a):
        A_in, A_out, a_j = A[:, into, n].unbind(1), A[:, out, n].unbind(1), a[:, :, n].unbind(1)
        for j in steps:
            torch.maximum(A_in[j], a_j[j], out=A_out[j])
    # all rescalings at once: of the state so far (r) and of the position's own value (q)
    r = torch.sub(A[:, into], A[:, out]).exp_()
    H = torch.empty((len(vals), B, T + 1) + a.shape[2:], device=a.device, dtype=a.dtype)
    H[:, :, T if reverse else 0] = seed_m
    q = torch.sub(a, A[:, out], out=H[0, :, out]).exp_()
    for n in range(len(vals) - 1, -1, -1):
        if vals[n] is not None:
            torch.mul(q, vals[n], out=H[n, :, out])
    for n in _pieces(a, len(vals)):
        H_in, H_out, r_j = H[:, :, into, n].unbind(2), H[:, :, out, n].unbind(2), r[:, :, n].unbind(1)
        for j in steps:
            H_out[j].addcmul_(H_in[j], r_j[j])
    return A[:, into], H[:, :, into]


def _decayed_sums(key, vals, w, chunks, reverse, seeds=None):
    """One direction's exclusive decayed sums of exp(key) * val: (scale, mantissas, seeds), the
    seeds (states entering each chunk) from the chunk totals unless given."""
    j = chunks.j
    a = key - j * w if reverse else key + j * w                  # (B, T, N, C)
    if seeds is None:
        seeds = _chunk_seeds(a, vals, w, reverse)
    A, H = _scan(a, vals, *seeds, reverse)
    return A.add_((j + 1) * w if reverse else -(j - 1) * w), H, seeds


def _chunk_seeds(a, vals, w, reverse):
    """Scale (B, N, C) and mantissas (nv, B, N, C) of the sum entering each chunk, in the
    chunk's a-offsets."""
    B, T, N, C = a.shape
    if N == 1:
        return (torch.full((B, N, C), NEG, device=a.device, dtype=a.dtype),
                torch.zeros((len(vals), B, N, C), device=a.device, dtype=a.dtype))
    top = a.amax(dim=1, keepdim=True)
    e = torch.sub(a, top).exp_()
    totals = [e.sum(dim=1) if val is None else torch.linalg.vecdot(e, val, dim=1) for val in vals]
    del e
    top = top[:, 0] if reverse else top[:, 0] - (T - 1) * w       # (B, N, C)
    # the chunk totals are a sequence N long with decay T*w: the same problem one level down
    chunks = _Chunks(N, a.device, a.dtype)
    scale, H, _ = _decayed_sums(chunks.split(top, a.dtype, fill=float("-inf")),
                                [chunks.split(t, a.dtype) for t in totals], T * w, chunks, reverse)
    scale = chunks.join(scale).sub_(T * w if reverse else w)
    return scale, torch.stack([chunks.join(h) for h in H])


def _forward_sums(w, u, kt, vt, chunks, seeds=None, yt=None):
    """Forward over chunk-layout k, v. Without seeds: (y, seeds of both directions). With
    them (backward): y (unless yt is given), the past and future sums, e^{u+k-M}, den*e^{-M}
    and log(den), M being the largest scale at each token."""
    keep = seeds is not None
    sP, (p1, pv), seeds_p = _decayed_sums(kt, [None, vt], w, chunks, False, seeds and seeds[0])
    sF, (f1, fv), seeds_f = _decayed_sums(kt, [None, vt], w, chunks, True, seeds and seeds[1])
    eS = kt + u
    M = torch.maximum(sP, sF)
    torch.maximum(M, eS, out=M)
    eS.sub_(M).exp_()
    eP = torch.sub(sP, M).exp_() if keep else sP.sub_(M).exp_()
    eF = torch.sub(sF, M).exp_() if keep else sF.sub_(M).exp_()
    den = torch.addcmul(eS, p1, eP).addcmul_(f1, eF)
    if yt is None:
        yt = torch.mul(vt, eS).addcmul_(pv, eP).addcmul_(fv, eF).div_(den)
    if not keep:
        return yt, (seeds_p, seeds_f)
    return yt, (sP, p1, pv), (sF, f1, fv), eS, den, M.add_(torch.log(den))


def _backward_sums(w, u, kt, vt, gt, chunks, seeds, yt):
    """(gw, gu, gk, gv) of sum(g * y) for one channel block, gk and gv in chunk layout;
    works in place to keep few temporaries alive."""
    yt, (sP, p1, pv), (sF, f1, fv), eS, den, lden = _forward_sums(w, u, kt, vt, chunks, seeds, yt)
    key = lden.neg_()                                             # z_t = g_t * e^{-lden_t}
    if chunks.pad:
        key[:, chunks.T - chunks.pad:, -1] = float("-inf")          # padding adds nothing
    gy = gt * yt
    sGp, (gp, hp), _ = _decayed_sums(key, [gt, gy], w, chunks, reverse=False)
    sGf, (gf, hf), _ = _decayed_sums(key, [gt, gy], w, chunks, reverse=True)
    del key, gy
    # gw = -e^{-w} sum_t [G->_t P_t(v) - H->_t P_t(1) + G<-_t F_t(v) - H<-_t F_t(1)] (spec B)
    dims = (0, 1, 2)
    gw = pv.mul_(gf).sub_(p1.mul_(hf)).mul_(sP.add_(sGf).sub_(w).exp_()).sum(dims)
    gw += fv.mul_(gp).sub_(f1.mul_(hp)).mul_(sF.add_(sGp).sub_(w).exp_()).sum(dims)
    gw.neg_()
    del sP, p1, pv, sF, f1, fv
    # e^k G and e^k H, G = G<- + G->
    ek = sGp.add_(kt).exp_()
    ekG, ekH = gp.mul_(ek), hp.mul_(ek)
    ek = sGf.add_(kt).exp_()
    ekG.addcmul_(gf, ek)
    ekH.addcmul_(hf, ek)
    selfw = eS.mul_(gt).div_(den)                                 # g_t * self weight / den_t
    sy = torch.mul(yt, selfw)
    gu = torch.linalg.vecdot(selfw, vt, dim=1).sum((0, 1)) - sy.sum(dims)
    gv = ekG.add_(selfw)
    gk = ekH.neg_().addcmul_(vt, gv).sub_(sy)
    return gw, gu, gk, gv


def bi_wkv_fwd_torch(w, u, k, v):
    """(y in k's dtype, saved): saved holds the states entering each chunk, (2, 3, B, N, C)."""
    acc = _acc_dtype(w, k)
    chunks = _Chunks(k.shape[1], k.device, acc)
    y = torch.empty_like(k)
    seeds = torch.empty((2, 3, k.shape[0], chunks.N, k.shape[2]), device=k.device, dtype=acc)
    for c in _channel_blocks(k.shape):
        kt = chunks.split(k[..., c], acc, fill=float("-inf"))
        vt = chunks.split(v[..., c], acc)
        yt, block_seeds = _forward_sums(w[c].to(acc), u[c].to(acc), kt, vt, chunks)
        chunks.join(yt, y[..., c])
        for d, (seed_a, seed_m) in enumerate(block_seeds):
            seeds[d, 0, ..., c] = seed_a
            seeds[d, 1:, ..., c] = seed_m
    return y, (seeds,)


def bi_wkv_bwd_torch(w, u, k, v, y, saved, gy):
    """(gw, gu, gk, gv) of sum(gy * y); y is reused where it holds the accumulation dtype."""
    acc = _acc_dtype(w, k)
    chunks = _Chunks(k.shape[1], k.device, acc)
    seeds = saved[0]
    gw, gu = torch.empty_like(w), torch.empty_like(u)
    gk, gv = torch.empty_like(k), torch.empty_like(v)
    for c in _channel_blocks(k.shape):
        kt = chunks.split(k[..., c], acc, fill=float("-inf"))
        vt = chunks.split(v[..., c], acc)
        gt = chunks.split(gy[..., c], acc)
        yt = chunks.split(y[..., c], acc) if y.dtype == acc else None
        block_seeds = [(seeds[d, 0, ..., c], seeds[d, 1:, ..., c]) for d in range(2)]
        gw[c], gu[c], gkt, gvt = _backward_sums(w[c].to(acc), u[c].to(acc), kt, vt, gt, chunks,
                                               block_seeds, yt)
        chunks.join(gkt, gk[..., c])
        chunks.join(gvt, gv[..., c])
    return gw, gu, gk, gv
