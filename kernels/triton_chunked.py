"""Chunked Bi-WKV in Triton: forward and backward kernels and their launchers.

The sequence is cut into chunks of BT tokens (../shared/reference/vrwkv-spec.md A.4):
  1. `_chunk_summary_kernel` (all chunks in parallel) reduces each chunk to its past- and
     future-direction summaries;
  2. `_chunk_carry_kernel` scans the summaries across chunks, in blocks of NB chunks,
     turning each into the state that flows into its chunk from the rest of the sequence;
  3. `_fwd_output_kernel` / `_bwd_output_kernel` rescan each chunk in registers, seeded
     with its carries, and write y (or the gradients).

A state is (a, b, m, pos): the sums a*exp(m), b*exp(m) of two values that share one key,
decayed to position pos. Two states merge by decaying the one farther from the output by
|pos1-pos2|*w and adding under the larger scale, so a running maximum rescales every sum
and nothing subtracts. The merge looks at pos, not at argument order, which makes it
valid for `tl.associative_scan` in both directions. w may have either sign.

The same machinery serves the backward pass: its sums G and H are decayed sums over key
-log(den) with values g and g*y (MODE 1), where the forward has key k and values v, 1
(MODE 0). Everything accumulates in fp32 whatever the input dtype.

Memory: the forward keeps only the carries (6 fp32 values per chunk and channel, about a
fifth of k's size in fp32 at 32-token chunks) and stores no normaliser; the backward
recomputes lden, and for half inputs y in fp32, from them with one extra output pass.
Offsets into (B, L, C) are 64-bit, so no shape overflows 32-bit indexing.
"""

import contextlib
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

NEG = tl.constexpr(-1.0e30)  # log-scale of an empty sum (finite: -inf - -inf would be NaN)


class Config(NamedTuple):
    bt: int = 32         # tokens per chunk
    nb: int = 32         # chunk summaries per block of the carry scan
    bc_fwd: int = 32     # channels per program: summary and forward output kernels
    bc_carry: int = 16   # channels per program: carry kernel (scan and reduce of a block)
    bc_bwd: int = 16     # channels per program: backward output kernel (more live tiles)
    warps: int = 4


GPU_CONFIG = Config()
# The interpreter runs scans element by element in Python: small tiles keep tests fast
# and put many chunk and block boundaries into short sequences.
INTERPRETER_CONFIG = Config(bt=8, nb=4, bc_fwd=8, bc_carry=8, bc_bwd=8, warps=1)


def default_config() -> Config:
    return INTERPRETER_CONFIG if os.environ.get("TRITON_INTERPRET") == "1" else GPU_CONFIG


@triton.jit
def _merge(a1, b1, m1, a2, b2, m2):
    # a1*e^m1 + a2*e^m2 under the larger scale, with one exp
    d = m1 - m2
    small = tl.exp(-tl.abs(d))
    e1 = tl.where(d >= 0, 1.0, small)
    e2 = tl.where(d >= 0, small, 1.0)
    return a1 * e1 + a2 * e2, b1 * e1 + b2 * e2, tl.maximum(m1, m2)


@triton.jit
def _combine_past(a1, b1, m1, p1, w1, a2, b2, m2, p2, w2):
    # past direction: the lower position is the older state, decayed by the gap
    gap = tl.abs(p1 - p2) * w1
    a, b, m = _merge(a1, b1, m1 - tl.where(p1 < p2, gap, 0.0), a2, b2, m2 - tl.where(p2 < p1, gap, 0.0))
    return a, b, m, tl.maximum(p1, p2), w1


@triton.jit
def _combine_future(a1, b1, m1, p1, w1, a2, b2, m2, p2, w2):
    # future direction: the higher position is the older state
    gap = tl.abs(p1 - p2) * w1
    a, b, m = _merge(a1, b1, m1 - tl.where(p1 > p2, gap, 0.0), a2, b2, m2 - tl.where(p2 > p1, gap, 0.0))
    return a, b, m, tl.minimum(p1, p2), w1


@triton.jit
def _scan(key, alpha, beta, pos, w, REVERSE: tl.constexpr):
    if REVERSE:
        a, b, m, _, _ = tl.associative_scan((alpha, beta, key, pos, w), 0, _combine_future, reverse=True)
    else:
        a, b, m, _, _ = tl.associative_scan((alpha, beta, key, pos, w), 0, _combine_past)
    return a, b, m


@triton.jit
def _summarise(key, alpha, beta, pos, w, REVERSE: tl.constexpr):
    if REVERSE:
        a, b, m, _, _ = tl.reduce((alpha, beta, key, pos, w), 0, _combine_future)
    else:
        a, b, m, _, _ = tl.reduce((alpha, beta, key, pos, w), 0, _combine_past)
    return a, b, m


@triton.jit
def _load_keyed(p0, p1, p2, offs, mask, MODE: tl.constexpr):
    """Per-token (key, alpha, beta): MODE 0 (k, v, 1) from p0=k, p1=v;
    MODE 1 (-lden, g, g*y) from p0=lden, p1=g, p2=y. Masked tokens are empty."""
    if MODE == 0:
        key = tl.load(p0 + offs, mask=mask, other=0.0).to(tl.float32)
        alpha = tl.load(p1 + offs, mask=mask, other=0.0).to(tl.float32)
        beta = tl.where(mask, 1.0, 0.0)
    else:
        key = -tl.load(p0 + offs, mask=mask, other=0.0).to(tl.float32)
        alpha = tl.load(p1 + offs, mask=mask, other=0.0).to(tl.float32)
        beta = alpha * tl.load(p2 + offs, mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, key, NEG), alpha, beta


@triton.jit
def _chunk_sums(p0, p1, p2, base, w, chunk_start, L, C, cols, cmask,
                MODE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """In-chunk exclusive sums at every token: past (tokens before it in the chunk)
    and future (tokens after it in the chunk), each as (a, b, m) tiles [BT, BC]."""
    r = tl.arange(0, BT)
    rows = chunk_start + r.to(tl.int64)
    pos = tl.broadcast_to(r[:, None].to(tl.float32), (BT, BC))
    wt = tl.broadcast_to(w[None, :], (BT, BC))
    # row r of the past scan holds token r-1 and of the future scan token r+1, so the
    # inclusive scans are the exclusive sums (no subtraction of the token itself)
    mp = ((r >= 1) & (rows - 1 < L))[:, None] & cmask[None, :]
    key, al, be = _load_keyed(p0, p1, p2, base + (rows - 1)[:, None] * C + cols[None, :], mp, MODE)
    pa, pb, pm = _scan(key, al, be, pos, wt, False)
    mf = ((r + 1 < BT) & (rows + 1 < L))[:, None] & cmask[None, :]
    key, al, be = _load_keyed(p0, p1, p2, base + (rows + 1)[:, None] * C + cols[None, :], mf, MODE)
    fa, fb, fm = _scan(key, al, be, pos, wt, True)
    return pa, pb, pm, fa, fb, fm


@triton.jit
def _with_carries(pa, pb, pm, fa, fb, fm, carry_ptr, plane, cidx, cmask, w,
                  BT: tl.constexpr):
    """Adds what flows in from outside the chunk: the past carry decayed to token r
    (r*w) and the future carry decayed to token r (BT-1-r)*w."""
    r = tl.arange(0, BT)[:, None].to(tl.float32)
    ca = tl.load(carry_ptr + cidx, mask=cmask, other=0.0)
    cb = tl.load(carry_ptr + plane + cidx, mask=cmask, other=0.0)
    cm = tl.load(carry_ptr + 2 * plane + cidx, mask=cmask, other=NEG)
    pa, pb, pm = _merge(pa, pb, pm, ca[None, :], cb[None, :], cm[None, :] - r * w[None, :])
    ca = tl.load(carry_ptr + 3 * plane + cidx, mask=cmask, other=0.0)
    cb = tl.load(carry_ptr + 4 * plane + cidx, mask=cmask, other=0.0)
    cm = tl.load(carry_ptr + 5 * plane + cidx, mask=cmask, other=NEG)
    fa, fb, fm = _merge(fa, fb, fm, ca[None, :], cb[None, :], cm[None, :] - (BT - 1 - r) * w[None, :])
    return pa, pb, pm, fa, fb, fm


@triton.jit
def _chunk_tile(L, C, NT, BT: tl.constexpr, BC: tl.constexpr):
    """This program's chunk: first token, channels and their mask, the token mask, the
    tile's base and offsets in (B, L, C), and its plane size and index in (6, B, NT, C)."""
    i_t, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = i_t * BT
    rows = start + tl.arange(0, BT).to(tl.int64)
    cols = i_c * BC + tl.arange(0, BC)
    cmask = cols < C
    mask = (rows < L)[:, None] & cmask[None, :]
    base = i_b.to(tl.int64) * L * C
    offs = base + rows[:, None] * C + cols[None, :]
    plane = tl.num_programs(2).to(tl.int64) * NT * C
    cidx = (i_b.to(tl.int64) * NT + i_t) * C + cols
    return start, cols, cmask, mask, base, offs, plane, cidx


@triton.jit(do_not_specialize=["L", "NT"])
def _chunk_summary_kernel(p0, p1, p2, w_ptr, sum_ptr, L, C, NT,
                          MODE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    start, cols, cmask, mask, base, offs, plane, cidx = _chunk_tile(L, C, NT, BT, BC)
    key, al, be = _load_keyed(p0, p1, p2, offs, mask, MODE)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    pos = tl.broadcast_to(tl.arange(0, BT)[:, None].to(tl.float32), (BT, BC))
    wt = tl.broadcast_to(w[None, :], (BT, BC))
    a, b, m = _summarise(key, al, be, pos, wt, False)     # decayed to the chunk's last token
    tl.store(sum_ptr + cidx, a, mask=cmask)
    tl.store(sum_ptr + plane + cidx, b, mask=cmask)
    tl.store(sum_ptr + 2 * plane + cidx, m, mask=cmask)
    a, b, m = _summarise(key, al, be, pos, wt, True)      # decayed to the chunk's first token
    tl.store(sum_ptr + 3 * plane + cidx, a, mask=cmask)
    tl.store(sum_ptr + 4 * plane + cidx, b, mask=cmask)
    tl.store(sum_ptr + 5 * plane + cidx, m, mask=cmask)


@triton.jit(do_not_specialize=["NT"])
def _chunk_carry_kernel(sum_ptr, w_ptr, C, NT, chunk_len,
                        REVERSE: tl.constexpr, NB: tl.constexpr, BC: tl.constexpr):
    """Replaces, in place, each chunk's summary by the carry flowing into that chunk:
    past: everything before it, decayed to its first token's predecessor;
    future: everything after it, decayed to its last token's successor."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    cols = i_c * BC + tl.arange(0, BC)
    cmask = cols < C
    plane = tl.num_programs(1).to(tl.int64) * NT * C
    ptr = sum_ptr + (3 * plane if REVERSE else 0)
    wc = tl.load(w_ptr + cols, mask=cmask, other=0.0) * chunk_len      # decay across one chunk
    wt = tl.broadcast_to(wc[None, :], (NB, BC))
    r = tl.arange(0, NB)
    pos = tl.broadcast_to(r[:, None].to(tl.float32), (NB, BC))
    ca = tl.zeros((BC,), tl.float32)
    cb = tl.zeros((BC,), tl.float32)
    cm = tl.full((BC,), NEG, tl.float32)
    n_blocks = tl.cdiv(NT, NB)
    for i in range(n_blocks):
        if REVERSE:
            blk = (n_blocks - 1 - i) * NB
            src = blk + r + 1
            gap = (NB - 1 - r).to(tl.float32)
        else:
            blk = i * NB
            src = blk + r - 1
            gap = r.to(tl.float32)
        rows = blk + r
        row_ok = rows < NT
        src_ok = (src >= blk) & (src < blk + NB) & (src < NT)
        base = i_b.to(tl.int64) * NT * C
        own = base + rows[:, None] * C + cols[None, :]
        shifted = base + src[:, None] * C + cols[None, :]
        m_own = row_ok[:, None] & cmask[None, :]
        m_src = src_ok[:, None] & cmask[None, :]
        sa = tl.load(ptr + shifted, mask=m_src, other=0.0)
        sb = tl.load(ptr + plane + shifted, mask=m_src, other=0.0)
        sm = tl.load(ptr + 2 * plane + shifted, mask=m_src, other=NEG)
        oa = tl.load(ptr + own, mask=m_own, other=0.0)
        ob = tl.load(ptr + plane + own, mask=m_own, other=0.0)
        om = tl.load(ptr + 2 * plane + own, mask=m_own, other=NEG)
        xa, xb, xm = _scan(sm, sa, sb, pos, wt, REVERSE)
        xa, xb, xm = _merge(xa, xb, xm, ca[None, :], cb[None, :], cm[None, :] - gap[:, None] * wc[None, :])
        ra, rb, rm = _summarise(om, oa, ob, pos, wt, REVERSE)
        ca, cb, cm = _merge(ra, rb, rm, ca, cb, cm - NB * wc)
        tl.store(ptr + own, xa, mask=m_own)
        tl.store(ptr + plane + own, xb, mask=m_own)
        tl.store(ptr + 2 * plane + own, xm, mask=m_own)


@triton.jit(do_not_specialize=["L", "NT"])
def _fwd_output_kernel(k_ptr, v_ptr, w_ptr, u_ptr, carry_ptr, y_ptr, lden_ptr, L, C, NT,
                       STORE_Y: tl.constexpr, STORE_LDEN: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """y (in y_ptr's dtype) and/or lden = log(den) (fp32) of one chunk."""
    start, cols, cmask, mask, base, offs, plane, cidx = _chunk_tile(L, C, NT, BT, BC)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    u = tl.load(u_ptr + cols, mask=cmask, other=0.0)
    pa, pb, pm, fa, fb, fm = _chunk_sums(k_ptr, v_ptr, v_ptr, base, w, start, L, C, cols, cmask, 0, BT, BC)
    pa, pb, pm, fa, fb, fm = _with_carries(pa, pb, pm, fa, fb, fm, carry_ptr, plane, cidx, cmask, w, BT)
    k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = u[None, :] + k
    m = tl.maximum(tl.maximum(pm, fm), s)
    ep, ef, es = tl.exp(pm - m), tl.exp(fm - m), tl.exp(s - m)
    den = pb * ep + fb * ef + es
    if STORE_Y:
        y = (pa * ep + fa * ef + v * es) / den
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_LDEN:
        tl.store(lden_ptr + offs, m + tl.log(den), mask=mask)


@triton.jit(do_not_specialize=["L", "NT"])
def _bwd_output_kernel(k_ptr, v_ptr, y_ptr, lden_ptr, g_ptr, w_ptr, u_ptr, fcarry_ptr, bcarry_ptr,
                       gk_ptr, gv_ptr, gw_part_ptr, gu_part_ptr, L, C, NT,
                       BT: tl.constexpr, BC: tl.constexpr):
    start, cols, cmask, mask, base, offs, plane, cidx = _chunk_tile(L, C, NT, BT, BC)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    u = tl.load(u_ptr + cols, mask=cmask, other=0.0)
    # forward sums P (past) and F (future), recomputed from the saved carries
    pa, pb, pm, fa, fb, fm = _chunk_sums(k_ptr, v_ptr, v_ptr, base, w, start, L, C, cols, cmask, 0, BT, BC)
    pa, pb, pm, fa, fb, fm = _with_carries(pa, pb, pm, fa, fb, fm, fcarry_ptr, plane, cidx, cmask, w, BT)
    # gradient sums: G (value g) and H (value g*y) over key -lden, past and future halves
    gpa, hpa, gpm, gfa, hfa, gfm = _chunk_sums(lden_ptr, g_ptr, y_ptr, base, w, start, L, C, cols, cmask, 1, BT, BC)
    gpa, hpa, gpm, gfa, hfa, gfm = _with_carries(gpa, hpa, gpm, gfa, hfa, gfm, bcarry_ptr, plane, cidx, cmask, w, BT)

    k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    lden = tl.load(lden_ptr + offs, mask=mask, other=0.0)
    eg_p, eg_f = tl.exp(k + gpm), tl.exp(k + gfm)          # bounded: each term is <= 1 (spec B)
    ek_g = gpa * eg_p + gfa * eg_f                           # e^k * G
    ek_h = hpa * eg_p + hfa * eg_f                           # e^k * H
    self_w = tl.where(mask, g * tl.exp(u[None, :] + k - lden), 0.0)
    gv = ek_g + self_w
    gk = v * ek_g - ek_h + self_w * (v - y)
    tl.store(gk_ptr + offs, gk.to(gk_ptr.dtype.element_ty), mask=mask)
    tl.store(gv_ptr + offs, gv.to(gv_ptr.dtype.element_ty), mask=mask)
    # gw = -e^{-w} sum_t [G->_t P_t(v) - H->_t P_t(1) + G<-_t F_t(v) - H<-_t F_t(1)]
    gw = (tl.exp(gfm + pm - w[None, :]) * (gfa * pa - hfa * pb)
          + tl.exp(gpm + fm - w[None, :]) * (gpa * fa - hpa * fb))
    gw = tl.where(mask, gw, 0.0)
    tl.store(gw_part_ptr + cidx, tl.sum(gw, axis=0), mask=cmask)
    tl.store(gu_part_ptr + cidx, tl.sum(self_w * (v - y), axis=0), mask=cmask)


# ----------------------------------------------------------------------------- launchers

def _on_device(t):
    """Triton launches on the current CUDA device: make it the tensors' own."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _carries(p0, p1, p2, w, mode, B, L, C, cfg):
    """Chunk summaries, then the carries into every chunk: (6, B, NT, C) fp32."""
    NT = triton.cdiv(L, cfg.bt)
    buf = torch.empty((6, B, NT, C), device=w.device, dtype=torch.float32)
    _chunk_summary_kernel[(NT, triton.cdiv(C, cfg.bc_fwd), B)](
        p0, p1, p2, w, buf, L, C, NT, MODE=mode, BT=cfg.bt, BC=cfg.bc_fwd, num_warps=cfg.warps)
    for reverse in (False, True):
        _chunk_carry_kernel[(triton.cdiv(C, cfg.bc_carry), B)](
            buf, w, C, NT, cfg.bt, REVERSE=reverse, NB=cfg.nb, BC=cfg.bc_carry, num_warps=cfg.warps)
    return buf


def _outputs(k, v, w, u, carries, y, lden, cfg):
    """Writes y and/or lden (either may be None) from the forward carries."""
    B, L, C = k.shape
    NT = carries.shape[2]
    _fwd_output_kernel[(NT, triton.cdiv(C, cfg.bc_fwd), B)](
        k, v, w, u, carries, y if y is not None else lden, lden if lden is not None else y, L, C, NT,
        STORE_Y=y is not None, STORE_LDEN=lden is not None, BT=cfg.bt, BC=cfg.bc_fwd, num_warps=cfg.warps)


def bi_wkv_fwd_triton(w, u, k, v, cfg: Config = None):
    """Returns (y, saved): y in k's dtype, saved = (forward carries,), 6 fp32 values per
    chunk and channel. The normaliser is not stored: the backward recomputes it."""
    cfg = cfg or default_config()
    B, L, C = k.shape
    w, u = w.float().contiguous(), u.float().contiguous()
    k, v = k.contiguous(), v.contiguous()
    with _on_device(k):
        carries = _carries(k, v, v, w, 0, B, L, C, cfg)
        y = torch.empty_like(k)
        _outputs(k, v, w, u, carries, y, None, cfg)
    return y, (carries,)


def bi_wkv_bwd_triton(w, u, k, v, y, saved, gy, cfg: Config = None):
    """Recomputes lden, and for half inputs y in fp32 (rounding y to bf16 would cost the
    decay gradient two digits), from the saved carries, then runs the gradient scans."""
    cfg = cfg or default_config()
    (fcarries,) = saved
    B, L, C = k.shape
    w32, u32 = w.float().contiguous(), u.float().contiguous()
    k, v, gy = k.contiguous(), v.contiguous(), gy.contiguous().to(k.dtype)
    with _on_device(k):
        lden = torch.empty((B, L, C), device=k.device, dtype=torch.float32)
        y32 = y.contiguous() if y.dtype == torch.float32 else torch.empty_like(lden)
        _outputs(k, v, w32, u32, fcarries, None if y.dtype == torch.float32 else y32, lden, cfg)
        bcarries = _carries(lden, gy, y32, w32, 1, B, L, C, cfg)
        NT = bcarries.shape[2]
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        gw_part = torch.empty((B, NT, C), device=k.device, dtype=torch.float32)
        gu_part = torch.empty_like(gw_part)
        _bwd_output_kernel[(NT, triton.cdiv(C, cfg.bc_bwd), B)](
            k, v, y32, lden, gy, w32, u32, fcarries, bcarries, gk, gv, gw_part, gu_part, L, C, NT,
            BT=cfg.bt, BC=cfg.bc_bwd, num_warps=cfg.warps)
        gw = -gw_part.sum(dim=(0, 1))
        gu = gu_part.sum(dim=(0, 1))
    return gw.to(w.dtype), gu.to(u.dtype), gk, gv
