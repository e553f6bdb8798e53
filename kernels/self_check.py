"""The Triton backend's self-check before it serves "auto": Triton's code generation has had
bugs in warp-level scans and matmul layouts, and the user's GPU may be one the kernels never
ran on. Compares y and all four gradients with the torch backend in float64, once per
device and dtype.
"""

import torch

# Max error relative to max|reference|: above the rounding of half-precision inputs and
# outputs (bench/results/gpu_nvidia_h100_80gb_hbm3.md), far below a wrong carry's O(0.1..1).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def check_inputs(cfg, device, dtype):
    """(w, u, k, v, gy), k, v, gy in dtype: three blocks and at least two channel tiles (the
    last of each partial), w*L from -2 to 4, and channel 0 decaying fast enough to send the
    first tile through the exact scan instead of the matmul form."""
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
    """None when the launchers `impl` agree with `reference`'s on the check input, else why:
    the first output that is off, or the error the kernels raised."""
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
