"""Chunked Bi-WKV in Triton: kernels and their launchers.

`chunk_state_kernel` reduces each chunk of BT tokens to its past and future states;
`block_state_kernel`, `block_scan_kernel` and `block_carry_kernel` turn them into the state
entering every chunk (one sequential loop, L / (BT * NB) long); `chunk_fwd_kernel` writes y,
and `chunk_bwd_state_kernel` and `chunk_bwd_kernel` do the same for the gradient sums. A
state (a, b, m) is the sums a*e^m, b*e^m; states merge under the larger scale.

In-chunk sums are 0/1 triangular matmuls on values rescaled by e^{k - R +- jw}, R the largest
log-weight the chunk sees. Tiles with |w|*(BT-1) <= SPAN, |u| <= BONUS and -w*L <= GROWTH in
every channel keep each factor within e^40; the rest take the exact scan `_scan_rows`. fp32
enters the tensor cores as three bf16 parts; everything accumulates in fp32.
"""

import contextlib
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

NEG = tl.constexpr(-1.0e30)  # log-scale of an empty sum (finite: -inf - -inf would be NaN)
SUB = tl.constexpr(4)        # channels per step of the exact scan (few registers)
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


class Config(NamedTuple):
    bt: int = 32           # tokens per chunk: the in-chunk matmuls are [BT, BT] x [BT, BC]
    nb: int = 32           # chunks per block, and block states per step of the block scan
    bc: int = 16           # channels per program of the chunk kernels (a multiple of SUB)
    bc_carry: int = 32     # channels per program of the block kernels
    warps: int = 4
    dot: bool = True       # in-chunk prefix sums as tl.dot with a 0/1 matrix (else a scan)
    span: float = 8.0      # the matmul form serves a tile when |w| * (BT - 1) <= span,
    bonus: float = 16.0    # |u| <= bonus and -w * L <= growth in each of its channels
    growth: float = 8.0


GPU_CONFIG = Config()
# Small tiles: fast under the interpreter, and many chunk and block boundaries in short tests.
INTERPRETER_CONFIG = Config(bt=8, nb=4, bc=8, bc_carry=8, warps=1)


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
def _scan_states(b_a, b_b, b_m, b_pos, b_w, FUTURE: tl.constexpr):
    """Inclusive scan of [N, BC] states along rows (rows are b_w apart)."""
    if FUTURE:
        a, b, m, _, _ = tl.associative_scan((b_a, b_b, b_m, b_pos, b_w), 0, _combine_future, reverse=True)
    else:
        a, b, m, _, _ = tl.associative_scan((b_a, b_b, b_m, b_pos, b_w), 0, _combine_past)
    return a, b, m


@triton.jit
def _reduce_states(b_a, b_b, b_m, b_pos, b_w, FUTURE: tl.constexpr):
    """[N, BC] states -> their sum decayed to the last row (past) or the first (future)."""
    if FUTURE:
        a, b, m, _, _ = tl.reduce((b_a, b_b, b_m, b_pos, b_w), 0, _combine_future)
    else:
        a, b, m, _, _ = tl.reduce((b_a, b_b, b_m, b_pos, b_w), 0, _combine_past)
    return a, b, m


@triton.jit
def _load_state(h, o_h, m_h, s_h, FUTURE: tl.constexpr):
    """One direction's (a, b, m) from planes s_h apart (past a, b, m, future a, b, m); masked: empty."""
    p_h = h + (3 * s_h if FUTURE else 0) + o_h
    return (tl.load(p_h, mask=m_h, other=0.0), tl.load(p_h + s_h, mask=m_h, other=0.0),
            tl.load(p_h + 2 * s_h, mask=m_h, other=NEG))


@triton.jit
def _store_state(h, o_h, m_h, s_h, b_a, b_b, b_m, FUTURE: tl.constexpr):
    p_h = h + (3 * s_h if FUTURE else 0) + o_h
    tl.store(p_h, b_a, mask=m_h)
    tl.store(p_h + s_h, b_b, mask=m_h)
    tl.store(p_h + 2 * s_h, b_m, mask=m_h)


@triton.jit
def _chunk_state(b_key, b_a, b_b, m_tc, b_w, BT: tl.constexpr):
    """A chunk's past state (at its last row) and future state (at its first), exact for any w."""
    o_j = tl.arange(0, BT).to(tl.float32)[:, None]
    b_s = tl.where(m_tc, b_key + o_j * b_w[None, :], NEG)
    b_top = tl.max(b_s, 0)
    b_e = tl.where(m_tc, tl.exp(b_s - b_top[None, :]), 0.0)
    pa, pb, pm = tl.sum(b_e * b_a, 0), tl.sum(b_e * b_b, 0), b_top - (BT - 1) * b_w
    b_s = tl.where(m_tc, b_key - o_j * b_w[None, :], NEG)
    b_top = tl.max(b_s, 0)
    b_e = tl.where(m_tc, tl.exp(b_s - b_top[None, :]), 0.0)
    return pa, pb, pm, tl.sum(b_e * b_a, 0), tl.sum(b_e * b_b, 0), b_top


@triton.jit
def _dot01(b_t, b_x):
    """b_t @ b_x for a 0/1 matrix b_t and fp32 b_x, b_x split into three bf16 parts (smallest
    first). The interpreter multiplies bf16 wrongly, so there the parts go in as fp32."""
    x1 = b_x.to(tl.bfloat16)
    b_r = b_x - x1.to(tl.float32)
    x2 = b_r.to(tl.bfloat16)
    x3 = (b_r - x2.to(tl.float32)).to(tl.bfloat16)
    if INTERPRETED:
        return tl.dot(b_t, x1.to(tl.float32), acc=tl.dot(b_t, x2.to(tl.float32), acc=tl.dot(b_t, x3.to(tl.float32))))
    b_t = b_t.to(tl.bfloat16)
    return tl.dot(b_t, x1, acc=tl.dot(b_t, x2, acc=tl.dot(b_t, x3)))


@triton.jit
def _add_runs_past(s1, e1, p1, s2, e2, p2):
    # runs of rows: (total, sum of all but the last row, last row); the lower run is earlier
    return s1 + s2, tl.where(p1 < p2, s1 + e2, s2 + e1), tl.maximum(p1, p2)


@triton.jit
def _add_runs_future(s1, e1, p1, s2, e2, p2):
    # runs of rows: (total, sum of all but the first row, first row); the higher run is earlier
    return s1 + s2, tl.where(p1 > p2, s1 + e2, s2 + e1), tl.minimum(p1, p2)


@triton.jit
def _exclusive_sum(b_x, BT: tl.constexpr, FUTURE: tl.constexpr, DOT: tl.constexpr):
    """Sum of the rows before (past) or after (future) each row: a 0/1 matmul (DOT) or a scan."""
    o_j = tl.arange(0, BT)
    if DOT:
        if FUTURE:
            b_t = tl.where(o_j[:, None] < o_j[None, :], 1.0, 0.0)
        else:
            b_t = tl.where(o_j[:, None] > o_j[None, :], 1.0, 0.0)
        return _dot01(b_t, b_x)
    b_pos = tl.broadcast_to(o_j[:, None], b_x.shape)
    if FUTURE:
        _, b_e, _ = tl.associative_scan((b_x, tl.zeros_like(b_x), b_pos), 0, _add_runs_future, reverse=True)
    else:
        _, b_e, _ = tl.associative_scan((b_x, tl.zeros_like(b_x), b_pos), 0, _add_runs_past)
    return b_e


@triton.jit
def _scan_rows(b_key, b_a, b_b, b_w, BT: tl.constexpr, FUTURE: tl.constexpr):
    """Exclusive decayed sums (a, b, m) at every row, one row at a time: exact for any w and keys."""
    o_j = tl.arange(0, BT)[:, None]
    s_a, s_b = tl.zeros_like(b_w), tl.zeros_like(b_w)
    s_m = tl.zeros_like(b_w) + NEG
    r_a, r_b = tl.zeros_like(b_a), tl.zeros_like(b_a)
    r_m = tl.zeros_like(b_a) + NEG
    for i in range(BT):
        if FUTURE:
            j = BT - 1 - i
        else:
            j = i
        m_j = o_j == j
        r_a, r_b = tl.where(m_j, s_a[None, :], r_a), tl.where(m_j, s_b[None, :], r_b)
        r_m = tl.where(m_j, s_m[None, :], r_m)
        x_key = tl.max(tl.where(m_j, b_key, NEG), 0)
        x_a, x_b = tl.sum(tl.where(m_j, b_a, 0.0), 0), tl.sum(tl.where(m_j, b_b, 0.0), 0)
        m = tl.maximum(s_m - b_w, x_key)
        c, e = tl.exp(s_m - b_w - m), tl.exp(x_key - m)
        s_a, s_b, s_m = s_a * c + x_a * e, s_b * c + x_b * e, m
    return r_a, r_b, r_m


@triton.jit
def _fast_path(w, u, o_c, C, L, SPAN: tl.constexpr, BONUS: tl.constexpr, GROWTH: tl.constexpr, BT: tl.constexpr):
    """Whether the matmul form serves the channels o_c (see the module docstring)."""
    b_w = tl.load(w + o_c, mask=o_c < C, other=0.0)
    b_u = tl.load(u + o_c, mask=o_c < C, other=0.0)
    return ((tl.max(tl.abs(b_w), 0) * (BT - 1) <= SPAN) & (tl.max(tl.abs(b_u), 0) <= BONUS)
            & (tl.max(-b_w, 0) * L <= GROWTH))


@triton.jit
def _matmul_scales(b_k, m_tc, b_w, b_u, c_pm, c_fm, BT: tl.constexpr):
    """The matmul form's factors: R (per channel, the largest of the chunk's keys and carry
    scales), e^{k-R}, e^{-jw}, e^{jw}, e^w, e^u and the carries' e^{scale - R}."""
    b_j = tl.arange(0, BT).to(tl.float32)[:, None]
    b_R = tl.maximum(tl.maximum(tl.max(tl.where(m_tc, b_k, NEG), 0), c_pm), c_fm - (BT - 1) * b_w)
    b_ek = tl.exp(tl.where(m_tc, b_k - b_R[None, :], NEG))
    b_dn, b_up = tl.exp(-b_j * b_w[None, :]), tl.exp(b_j * b_w[None, :])
    c_p, c_f = tl.exp(c_pm - b_R), tl.exp(c_fm - (BT - 1) * b_w - b_R)
    return b_R, b_ek, b_dn, b_up, tl.exp(b_w)[None, :], tl.exp(b_u)[None, :], c_p, c_f


@triton.jit
def _matmul_sums(b_x, b_xv, b_out, b_ew, c_s, c_a, c_b, BT: tl.constexpr, FUTURE: tl.constexpr,
                 DOT: tl.constexpr):
    """One direction's sums at every row over e^R, carries included: b_out * (e^w * T @ x
    + c_s * carry) for (x, carry) = (b_xv, c_a) and (b_x, c_b)."""
    s_v = b_out * (b_ew * _exclusive_sum(b_xv, BT, FUTURE, DOT) + (c_s * c_a)[None, :])
    s_1 = b_out * (b_ew * _exclusive_sum(b_x, BT, FUTURE, DOT) + (c_s * c_b)[None, :])
    return s_v, s_1


@triton.jit
def _matmul_y(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT: tl.constexpr, DOT: tl.constexpr):
    """y and den / e^R of a chunk in the matmul form; y = v + the others' pull, so a lone
    token gets exactly its own v."""
    b_R, b_ek, b_dn, b_up, b_ew, b_eu, c_p, c_f = _matmul_scales(b_k, m_tc, b_w, b_u, c_pm, c_fm, BT)
    b_x = b_ek * b_up
    pv, p1 = _matmul_sums(b_x, b_x * b_v, b_dn, b_ew, c_p, c_pa, c_pb, BT, False, DOT)
    b_n, b_d = pv - b_v * p1, p1
    b_x = b_ek * b_dn
    fv, f1 = _matmul_sums(b_x, b_x * b_v, b_up, b_ew, c_f, c_fa, c_fb, BT, True, DOT)
    b_n, b_d = b_n + (fv - b_v * f1), b_d + f1
    b_den = tl.where(m_tc, b_d + b_eu * b_ek, 1.0)
    return b_v + b_n / b_den, b_den, b_R, b_dn, b_up


@triton.jit
def _scan_sums(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT: tl.constexpr):
    """A chunk's past and future (a, b, m), num, den and their log-scale by the exact scan."""
    b_j = tl.arange(0, BT).to(tl.float32)[:, None]
    b_key = tl.where(m_tc, b_k, NEG)
    b_one = tl.where(m_tc, 1.0, 0.0)
    pa, pb, pm = _scan_rows(b_key, b_v, b_one, b_w, BT, False)
    pa, pb, pm = _merge(pa, pb, pm, c_pa[None, :], c_pb[None, :], c_pm[None, :] - b_j * b_w[None, :])
    fa, fb, fm = _scan_rows(b_key, b_v, b_one, b_w, BT, True)
    fa, fb, fm = _merge(fa, fb, fm, c_fa[None, :], c_fb[None, :], c_fm[None, :] - (BT - 1 - b_j) * b_w[None, :])
    b_s = b_u[None, :] + b_k
    m = tl.maximum(tl.maximum(pm, fm), b_s)
    ep, ef, es = tl.exp(pm - m), tl.exp(fm - m), tl.exp(b_s - m)
    den = tl.where(m_tc, pb * ep + fb * ef + es, 1.0)
    return pa, pb, pm, fa, fb, fm, pa * ep + fa * ef + b_v * es, den, m


@triton.jit
def _tile(i_t, i_b, o_c, L, C, NT, BT: tl.constexpr):
    """Masks, 64-bit offsets into (B, L, C) and [6, B, NT, C], and the state plane size of a tile."""
    o_t = i_t * BT + tl.arange(0, BT).to(tl.int64)
    m_c = o_c < C
    m_tc = (o_t < L)[:, None] & m_c[None, :]
    o_tc = i_b.to(tl.int64) * L * C + o_t[:, None] * C + o_c[None, :]
    o_h = (i_b.to(tl.int64) * NT + i_t) * C + o_c
    s_h = tl.num_programs(2).to(tl.int64) * NT * C
    return m_c, m_tc, o_tc, o_h, s_h


@triton.jit
def _fwd_tile(k, v, w, u, h, y, i_t, i_b, o_c, L, C, NT, SCAN: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr):
    m_c, m_tc, o_tc, o_h, s_h = _tile(i_t, i_b, o_c, L, C, NT, BT)
    b_k = tl.load(k + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_v = tl.load(v + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0)
    b_u = tl.load(u + o_c, mask=m_c, other=0.0)
    c_pa, c_pb, c_pm = _load_state(h, o_h, m_c, s_h, False)
    c_fa, c_fb, c_fm = _load_state(h, o_h, m_c, s_h, True)
    if SCAN:
        _, _, _, _, _, _, num, den, _ = _scan_sums(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT)
        b_y = num / den
    else:
        b_y, _, _, _, _ = _matmul_y(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT, DOT)
    tl.store(y + o_tc, b_y.to(y.dtype.element_ty), mask=m_tc)


@triton.jit
def _bwd_state_tile(k, v, dy, w, u, h, hg, i_t, i_b, o_c, L, C, NT,
                    SCAN: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr):
    m_c, m_tc, o_tc, o_h, s_h = _tile(i_t, i_b, o_c, L, C, NT, BT)
    b_k = tl.load(k + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_v = tl.load(v + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_g = tl.load(dy + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0)
    b_u = tl.load(u + o_c, mask=m_c, other=0.0)
    c_pa, c_pb, c_pm = _load_state(h, o_h, m_c, s_h, False)
    c_fa, c_fb, c_fm = _load_state(h, o_h, m_c, s_h, True)
    if SCAN:
        _, _, _, _, _, _, num, den, m = _scan_sums(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT)
        ga, gb, gm, fa, fb, fm = _chunk_state(-(m + tl.log(den)), b_g, b_g * num / den, m_tc, b_w, BT)
    else:
        b_y, b_den, b_R, b_dn, b_up = _matmul_y(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm, c_fa, c_fb, c_fm, BT, DOT)
        b_z = tl.where(m_tc, b_g / b_den, 0.0)                 # dy / den * e^R
        b_zy = b_z * b_y
        ga, gb, gm = tl.sum(b_up * b_z, 0), tl.sum(b_up * b_zy, 0), -b_R - (BT - 1) * b_w
        fa, fb, fm = tl.sum(b_dn * b_z, 0), tl.sum(b_dn * b_zy, 0), -b_R
    _store_state(hg, o_h, m_c, s_h, ga, gb, gm, False)
    _store_state(hg, o_h, m_c, s_h, fa, fb, fm, True)


@triton.jit
def _bwd_tile(k, v, dy, w, u, h, hg, dk, dv, dw, du, i_t, i_b, o_c, L, C, NT,
              SCAN: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr):
    m_c, m_tc, o_tc, o_h, s_h = _tile(i_t, i_b, o_c, L, C, NT, BT)
    b_k = tl.load(k + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_v = tl.load(v + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_g = tl.load(dy + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0)
    b_u = tl.load(u + o_c, mask=m_c, other=0.0)
    c_pa, c_pb, c_pm = _load_state(h, o_h, m_c, s_h, False)
    c_fa, c_fb, c_fm = _load_state(h, o_h, m_c, s_h, True)
    g_pa, g_pb, g_pm = _load_state(hg, o_h, m_c, s_h, False)
    g_fa, g_fb, g_fm = _load_state(hg, o_h, m_c, s_h, True)
    if SCAN:
        pa, pb, pm, fa, fb, fm, num, den, m = _scan_sums(b_k, b_v, m_tc, b_w, b_u, c_pa, c_pb, c_pm,
                                                         c_fa, c_fb, c_fm, BT)
        b_y = num / den
        b_key = tl.where(m_tc, -(m + tl.log(den)), NEG)
        b_self = b_g * tl.exp(b_u[None, :] + b_k - m) / den
        b_j = tl.arange(0, BT).to(tl.float32)[:, None]
        # G (value dy) and H (value dy*y) over key -log(den), future then past; dw pairs
        # each with the other direction's forward sums
        ga, ha, gm = _scan_rows(b_key, b_g, b_g * b_y, b_w, BT, True)
        ga, ha, gm = _merge(ga, ha, gm, g_fa[None, :], g_fb[None, :], g_fm[None, :] - (BT - 1 - b_j) * b_w[None, :])
        b_dw = tl.exp(gm + pm) * (ga * pa - ha * pb)
        eg = tl.exp(b_k + gm)                                  # <= 1 (spec B)
        ek_g, ek_h = ga * eg, ha * eg
        ga, ha, gm = _scan_rows(b_key, b_g, b_g * b_y, b_w, BT, False)
        ga, ha, gm = _merge(ga, ha, gm, g_pa[None, :], g_pb[None, :], g_pm[None, :] - b_j * b_w[None, :])
        b_dw += tl.exp(gm + fm) * (ga * fa - ha * fb)
        eg = tl.exp(b_k + gm)
        ek_g, ek_h = ek_g + ga * eg, ek_h + ha * eg
    else:
        b_R, b_ek, b_dn, b_up, b_ew, b_eu, c_p, c_f = _matmul_scales(b_k, m_tc, b_w, b_u, c_pm, c_fm, BT)
        b_x = b_ek * b_up
        pv, p1 = _matmul_sums(b_x, b_x * b_v, b_dn, b_ew, c_p, c_pa, c_pb, BT, False, DOT)
        b_x = b_ek * b_dn
        fv, f1 = _matmul_sums(b_x, b_x * b_v, b_up, b_ew, c_f, c_fa, c_fb, BT, True, DOT)
        b_den = tl.where(m_tc, p1 + f1 + b_eu * b_ek, 1.0)
        b_y = b_v + (pv - b_v * p1 + fv - b_v * f1) / b_den
        b_z = tl.where(m_tc, b_g / b_den, 0.0)
        b_self = b_g * b_eu * b_ek / b_den
        # the gradient sums times e^R, future then past; dw as above
        c_gp, c_gf = tl.exp(g_pm + b_R), tl.exp(g_fm - (BT - 1) * b_w + b_R)
        b_x = b_dn * b_z
        ek_h, ek_g = _matmul_sums(b_x, b_x * b_y, b_up, b_ew, c_gf, g_fb, g_fa, BT, True, DOT)
        b_dw = ek_g * pv - ek_h * p1
        b_x = b_up * b_z
        hp, gp = _matmul_sums(b_x, b_x * b_y, b_dn, b_ew, c_gp, g_pb, g_pa, BT, False, DOT)
        b_dw += gp * fv - hp * f1
        ek_g, ek_h = b_ek * (ek_g + gp), b_ek * (ek_h + hp)
    b_self = tl.where(m_tc, b_self, 0.0)
    tl.store(dv + o_tc, (ek_g + b_self).to(dv.dtype.element_ty), mask=m_tc)
    tl.store(dk + o_tc, (b_v * ek_g - ek_h + b_self * (b_v - b_y)).to(dk.dtype.element_ty), mask=m_tc)
    # dw = -e^{-w} sum_t [G->_t P_t(v) - H->_t P_t(1) + G<-_t F_t(v) - H<-_t F_t(1)]
    tl.store(dw + o_h, -tl.exp(-b_w) * tl.sum(tl.where(m_tc, b_dw, 0.0), 0), mask=m_c)
    tl.store(du + o_h, tl.sum(b_self * (b_v - b_y), 0), mask=m_c)


@triton.jit(do_not_specialize=["L", "NT"])
def chunk_state_kernel(
    k,  # [B, L, C]
    v,  # [B, L, C]
    w,  # [C] fp32
    h,  # [6, B, NT, C] fp32, written: each chunk's states
    L, C, NT,
    BT: tl.constexpr, BC: tl.constexpr,
):
    i_t, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BC + tl.arange(0, BC)
    m_c, m_tc, o_tc, o_h, s_h = _tile(i_t, i_b, o_c, L, C, NT, BT)
    b_k = tl.load(k + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_v = tl.load(v + o_tc, mask=m_tc, other=0.0).to(tl.float32)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0)
    pa, pb, pm, fa, fb, fm = _chunk_state(b_k, b_v, tl.where(m_tc, 1.0, 0.0), m_tc, b_w, BT)
    _store_state(h, o_h, m_c, s_h, pa, pb, pm, False)
    _store_state(h, o_h, m_c, s_h, fa, fb, fm, True)


@triton.jit(do_not_specialize=["NT", "NBLK"])
def block_state_kernel(
    h,   # [6, B, NT, C] fp32: chunk states
    hb,  # [6, B, NBLK, C] fp32, written: each block's states
    w,   # [C] fp32
    C, NT, NBLK,
    BT: tl.constexpr, NB: tl.constexpr, BC: tl.constexpr,
):
    i_n, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_n = i_n * NB + tl.arange(0, NB)
    o_c = i_c * BC + tl.arange(0, BC)
    m_c = o_c < C
    m_nc = (o_n < NT)[:, None] & m_c[None, :]
    o_h = (i_b.to(tl.int64) * NT + o_n[:, None]) * C + o_c[None, :]
    s_h = tl.num_programs(2).to(tl.int64) * NT * C
    o_hb = (i_b.to(tl.int64) * NBLK + i_n) * C + o_c
    s_hb = tl.num_programs(2).to(tl.int64) * NBLK * C
    b_w = tl.broadcast_to((tl.load(w + o_c, mask=m_c, other=0.0) * BT)[None, :], (NB, BC))
    b_pos = tl.broadcast_to(tl.arange(0, NB).to(tl.float32)[:, None], (NB, BC))
    a, b, m = _load_state(h, o_h, m_nc, s_h, False)
    a, b, m = _reduce_states(a, b, m, b_pos, b_w, False)
    _store_state(hb, o_hb, m_c, s_hb, a, b, m, False)
    a, b, m = _load_state(h, o_h, m_nc, s_h, True)
    a, b, m = _reduce_states(a, b, m, b_pos, b_w, True)
    _store_state(hb, o_hb, m_c, s_hb, a, b, m, True)


@triton.jit
def _carry_tile(h, o_n0, N, C, o_c, m_c, s_h, i_b, b_w, c_a, c_b, c_m,
                NB: tl.constexpr, BC: tl.constexpr, FUTURE: tl.constexpr):
    """Replaces states o_n0..o_n0+NB-1 of h (rows b_w apart) by what flows into each, the state
    (c_a, c_b, c_m) entering the tile included; returns the state leaving the tile."""
    r = tl.arange(0, NB)
    o_n = o_n0 + r
    if FUTURE:
        o_src = o_n + 1
        b_gap = (NB - 1 - r).to(tl.float32)
    else:
        o_src = o_n - 1
        b_gap = r.to(tl.float32)
    m_own = (o_n < N)[:, None] & m_c[None, :]
    m_src = ((o_src >= o_n0) & (o_src < o_n0 + NB) & (o_src < N))[:, None] & m_c[None, :]
    o_base = i_b.to(tl.int64) * N * C
    o_own = o_base + o_n[:, None] * C + o_c[None, :]
    o_shift = o_base + o_src[:, None] * C + o_c[None, :]
    b_pos = tl.broadcast_to(r[:, None].to(tl.float32), (NB, BC))
    b_wt = tl.broadcast_to(b_w[None, :], (NB, BC))
    sa, sb, sm = _load_state(h, o_shift, m_src, s_h, FUTURE)
    oa, ob, om = _load_state(h, o_own, m_own, s_h, FUTURE)
    xa, xb, xm = _scan_states(sa, sb, sm, b_pos, b_wt, FUTURE)
    xa, xb, xm = _merge(xa, xb, xm, c_a[None, :], c_b[None, :], c_m[None, :] - b_gap[:, None] * b_w[None, :])
    ra, rb, rm = _reduce_states(oa, ob, om, b_pos, b_wt, FUTURE)
    _store_state(h, o_own, m_own, s_h, xa, xb, xm, FUTURE)
    return _merge(ra, rb, rm, c_a, c_b, c_m - NB * b_w)


@triton.jit(do_not_specialize=["NBLK"])
def block_scan_kernel(
    hb,  # [6, B, NBLK, C] fp32: block states, replaced in place by the carries into each block
    w,   # [C] fp32
    C, NBLK, block_len,
    FUTURE: tl.constexpr, NB: tl.constexpr, BC: tl.constexpr,
):
    """The one sequential loop: over the block states, NB at a time."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    o_c = i_c * BC + tl.arange(0, BC)
    m_c = o_c < C
    s_h = tl.num_programs(1).to(tl.int64) * NBLK * C
    b_w = tl.load(w + o_c, mask=m_c, other=0.0) * block_len
    c_a, c_b = tl.zeros((BC,), tl.float32), tl.zeros((BC,), tl.float32)
    c_m = tl.full((BC,), NEG, tl.float32)
    n_tiles = tl.cdiv(NBLK, NB)
    for i in range(n_tiles):
        if FUTURE:
            i_n = n_tiles - 1 - i
        else:
            i_n = i
        c_a, c_b, c_m = _carry_tile(hb, i_n * NB, NBLK, C, o_c, m_c, s_h, i_b, b_w, c_a, c_b, c_m, NB, BC, FUTURE)


@triton.jit(do_not_specialize=["NT", "NBLK"])
def block_carry_kernel(
    h,   # [6, B, NT, C] fp32: chunk states, replaced in place by the carries into each chunk
    hb,  # [6, B, NBLK, C] fp32: carries into each block
    w,   # [C] fp32
    C, NT, NBLK,
    BT: tl.constexpr, NB: tl.constexpr, BC: tl.constexpr,
):
    i_n, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BC + tl.arange(0, BC)
    m_c = o_c < C
    s_h = tl.num_programs(2).to(tl.int64) * NT * C
    s_hb = tl.num_programs(2).to(tl.int64) * NBLK * C
    o_hb = (i_b.to(tl.int64) * NBLK + i_n) * C + o_c
    b_w = tl.load(w + o_c, mask=m_c, other=0.0) * BT
    c_a, c_b, c_m = _load_state(hb, o_hb, m_c, s_hb, False)
    _carry_tile(h, i_n * NB, NT, C, o_c, m_c, s_h, i_b, b_w, c_a, c_b, c_m, NB, BC, False)
    c_a, c_b, c_m = _load_state(hb, o_hb, m_c, s_hb, True)
    _carry_tile(h, i_n * NB, NT, C, o_c, m_c, s_h, i_b, b_w, c_a, c_b, c_m, NB, BC, True)


@triton.jit(do_not_specialize=["L", "NT"])
def chunk_fwd_kernel(
    k,  # [B, L, C]
    v,  # [B, L, C]
    w,  # [C] fp32
    u,  # [C] fp32
    h,  # [6, B, NT, C] fp32: carries into each chunk
    y,  # [B, L, C], written
    L, C, NT,
    SPAN: tl.constexpr, BONUS: tl.constexpr, GROWTH: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr,
):
    i_t, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BC + tl.arange(0, BC)
    if _fast_path(w, u, o_c, C, L, SPAN, BONUS, GROWTH, BT):
        _fwd_tile(k, v, w, u, h, y, i_t, i_b, o_c, L, C, NT, False, DOT, BT)
    else:
        for i_s in range(0, BC, SUB):
            _fwd_tile(k, v, w, u, h, y, i_t, i_b, i_c * BC + i_s + tl.arange(0, SUB), L, C, NT, True, DOT, BT)


@triton.jit(do_not_specialize=["L", "NT"])
def chunk_bwd_state_kernel(
    k,   # [B, L, C]
    v,   # [B, L, C]
    dy,  # [B, L, C]
    w,   # [C] fp32
    u,   # [C] fp32
    h,   # [6, B, NT, C] fp32: forward carries into each chunk
    hg,  # [6, B, NT, C] fp32, written: each chunk's gradient-sum states
    L, C, NT,
    SPAN: tl.constexpr, BONUS: tl.constexpr, GROWTH: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr,
):
    """Chunk states of the gradient sums G, H (key -log(den), values dy and dy*y, spec B)."""
    i_t, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BC + tl.arange(0, BC)
    if _fast_path(w, u, o_c, C, L, SPAN, BONUS, GROWTH, BT):
        _bwd_state_tile(k, v, dy, w, u, h, hg, i_t, i_b, o_c, L, C, NT, False, DOT, BT)
    else:
        for i_s in range(0, BC, SUB):
            _bwd_state_tile(k, v, dy, w, u, h, hg, i_t, i_b, i_c * BC + i_s + tl.arange(0, SUB), L, C, NT,
                            True, DOT, BT)


@triton.jit(do_not_specialize=["L", "NT"])
def chunk_bwd_kernel(
    k,   # [B, L, C]
    v,   # [B, L, C]
    dy,  # [B, L, C]
    w,   # [C] fp32
    u,   # [C] fp32
    h,   # [6, B, NT, C] fp32: forward carries into each chunk
    hg,  # [6, B, NT, C] fp32: gradient-sum carries into each chunk
    dk,  # [B, L, C], written
    dv,  # [B, L, C], written
    dw,  # [B, NT, C] fp32, written: each chunk's share of dw
    du,  # [B, NT, C] fp32, written: each chunk's share of du
    L, C, NT,
    SPAN: tl.constexpr, BONUS: tl.constexpr, GROWTH: tl.constexpr, DOT: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr,
):
    i_t, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BC + tl.arange(0, BC)
    if _fast_path(w, u, o_c, C, L, SPAN, BONUS, GROWTH, BT):
        _bwd_tile(k, v, dy, w, u, h, hg, dk, dv, dw, du, i_t, i_b, o_c, L, C, NT, False, DOT, BT)
    else:
        for i_s in range(0, BC, SUB):
            _bwd_tile(k, v, dy, w, u, h, hg, dk, dv, dw, du, i_t, i_b, i_c * BC + i_s + tl.arange(0, SUB), L, C, NT,
                      True, DOT, BT)


def _on_device(t):
    """Triton launches on the current CUDA device: make it the tensors' own."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _carries(h, w, cfg):
    """Chunk states h [6, B, NT, C] -> the carries into every chunk, in place."""
    _, B, NT, C = h.shape
    NBLK = triton.cdiv(NT, cfg.nb)
    hb = torch.empty((6, B, NBLK, C), device=h.device, dtype=torch.float32)
    grid = (NBLK, triton.cdiv(C, cfg.bc_carry), B)
    block_state_kernel[grid](h, hb, w, C, NT, NBLK, BT=cfg.bt, NB=cfg.nb, BC=cfg.bc_carry, num_warps=cfg.warps)
    for future in (False, True):
        block_scan_kernel[(triton.cdiv(C, cfg.bc_carry), B)](
            hb, w, C, NBLK, cfg.nb * cfg.bt, FUTURE=future, NB=cfg.nb, BC=cfg.bc_carry, num_warps=cfg.warps)
    block_carry_kernel[grid](h, hb, w, C, NT, NBLK, BT=cfg.bt, NB=cfg.nb, BC=cfg.bc_carry, num_warps=cfg.warps)
    return h


def _chunk_grid(B, L, C, cfg):
    return triton.cdiv(L, cfg.bt), triton.cdiv(C, cfg.bc), B


def _limits(cfg):
    return {"SPAN": cfg.span, "BONUS": cfg.bonus, "GROWTH": cfg.growth, "DOT": cfg.dot, "BT": cfg.bt, "BC": cfg.bc,
            "num_warps": cfg.warps}


def bi_wkv_fwd_triton(w, u, k, v, cfg: Config = None):
    """(y in k's dtype, (carries,)): 6 fp32 values per chunk and channel, nothing of k's size."""
    cfg = cfg or default_config()
    B, L, C = k.shape
    w, u = w.float().contiguous(), u.float().contiguous()
    k, v = k.contiguous(), v.contiguous()
    grid = _chunk_grid(B, L, C, cfg)
    with _on_device(k):
        h = torch.empty((6, B, grid[0], C), device=k.device, dtype=torch.float32)
        chunk_state_kernel[grid](k, v, w, h, L, C, grid[0], BT=cfg.bt, BC=cfg.bc, num_warps=cfg.warps)
        _carries(h, w, cfg)
        y = torch.empty_like(k)
        chunk_fwd_kernel[grid](k, v, w, u, h, y, L, C, grid[0], **_limits(cfg))
    return y, (h,)


def bi_wkv_bwd_triton(w, u, k, v, y, saved, gy, cfg: Config = None):
    """(gw, gu, gk, gv) of sum(gy * y). `y` is unused: den and y are recomputed in fp32 from
    the carries (a bf16 y would cost the decay gradient two digits)."""
    cfg = cfg or default_config()
    (h,) = saved
    B, L, C = k.shape
    w32, u32 = w.float().contiguous(), u.float().contiguous()
    k, v, gy = k.contiguous(), v.contiguous(), gy.contiguous().to(k.dtype)
    grid = _chunk_grid(B, L, C, cfg)
    with _on_device(k):
        hg = torch.empty_like(h)
        chunk_bwd_state_kernel[grid](k, v, gy, w32, u32, h, hg, L, C, grid[0], **_limits(cfg))
        _carries(hg, w32, cfg)
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        gw_part = torch.empty((B, grid[0], C), device=k.device, dtype=torch.float32)
        gu_part = torch.empty_like(gw_part)
        chunk_bwd_kernel[grid](k, v, gy, w32, u32, h, hg, gk, gv, gw_part, gu_part, L, C, grid[0], **_limits(cfg))
    return gw_part.sum(dim=(0, 1)).to(w.dtype), gu_part.sum(dim=(0, 1)).to(u.dtype), gk, gv
