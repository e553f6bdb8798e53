"""The Triton backend checks itself before it serves "auto".

Warp-level scans and matmul layouts are where Triton's code generation has had bugs, and
a GPU the kernels were never run on may be the user's. So the first call per device and
dtype runs the Triton launchers on an input that crosses chunks, blocks and channel tiles
of the configuration in use and takes both in-chunk forms (matmul and scan), and compares
y and all four gradients with the torch backend in float64 on the same (rounded) inputs.
It costs a fraction of a second once per process on a GPU.
"""

import torch

# Max error relative to max|reference|. The kernels accumulate in fp32; half inputs add
# the rounding of y, gk, gv and the incoming gradient (~1e-3 for fp16, ~1e-2 for bf16).
# A wrong carry or scan is off by O(0.1..1).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def check_inputs(cfg, device, dtype):
    """(w, u, k, v, gy): w, u in fp32, k, v, gy in dtype. L covers three blocks (the last
    one and its last chunk partial), C two channel tiles (the last partial); w*L spans
    -2..4 (weights growing and decaying with distance), except in channel 0, whose decay
    of twice cfg.span per chunk sends the first channel tile through the exact scan
    instead of the matmul form."""
    L = 2 * cfg.bt * cfg.nb + cfg.bt // 2 + 1
    C = max(cfg.bc, cfg.bc_carry) + 1
    g = torch.Generator().manual_seed(0)
    w = torch.linspace(-2.0, 4.0, C) / L
    w[0] = 2 * cfg.span / max(cfg.bt - 1, 1)
    u = torch.randn(C, generator=g)
    k = 2 * torch.randn(2, L, C, generator=g)
    v, gy = torch.randn(2, L, C, generator=g), torch.randn(2, L, C, generator=g)
    return w.to(device), u.to(device), *(t.to(device, dtype) for t in (k, v, gy))


def self_check(impl, reference, cfg, device, dtype) -> str | None:
    """None when `impl` (forward, backward launchers) agrees with `reference` (the torch
    backend's) on the check input, else the reason: the first output that is off, or the
    error the kernels raised (a compile error, say)."""
    w, u, k, v, gy = check_inputs(cfg, device, dtype)
    try:
        with torch.no_grad():
            y, saved = impl[0](w, u, k, v)
            got = (y, *impl[1](w, u, k, v, y, saved, gy))
    except Exception as e:  # any failure to compile or launch means: do not use Triton here
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    w, u, k, v, gy = (t.double() for t in (w, u, k, v, gy))
    with torch.no_grad():
        y_ref, saved = reference[0](w, u, k, v)
        want = (y_ref, *reference[1](w, u, k, v, y_ref, saved, gy))
    for name, a, b in zip(("y", "gw", "gu", "gk", "gv"), got, want):
        err = ((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()
        if not err <= TOLERANCE[dtype]:  # also catches NaN
            return f"{name} is off by {err:.3g} relative to the torch backend (tolerance {TOLERANCE[dtype]:g})"
    return None
