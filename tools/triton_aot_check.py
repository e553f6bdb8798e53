"""Compiles every Bi-WKV Triton kernel ahead of time for real GPUs (no GPU needed) and
reports registers, spills and shared memory; exits 1 if any kernel fails to compile or
spills. The interpreter accepts code that GPU compilation rejects: this catches it.

    python tools/triton_aot_check.py [--arch 80 90] [--dtype fp32 fp16 bf16]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run without TRITON_INTERPRET=1: it replaces kernels by interpreted functions")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from load_pack import load_pack  # noqa: E402


def kernel_specs(tc, dt):
    """(kernel, signature, constexprs, num_warps) for each launch the launchers make."""
    cfg = tc.GPU_CONFIG
    i32, f32 = "i32", "*fp32"
    chunk = {"BT": cfg.bt, "BC": cfg.bc}
    limits = {"SPAN": cfg.span, "BONUS": cfg.bonus, "GROWTH": cfg.growth, "DOT": cfg.dot, **chunk}
    block = {"BT": cfg.bt, "NB": cfg.nb, "BC": cfg.bc_carry}

    def sig(names, consts):
        return {**names, **{c: "constexpr" for c in consts}}
    return [
        (tc.chunk_state_kernel, sig({"k": f"*{dt}", "v": f"*{dt}", "w": f32, "h": f32, "L": i32, "C": i32,
                                     "NT": i32}, chunk), chunk, cfg.warps),
        (tc.block_state_kernel, sig({"h": f32, "hb": f32, "w": f32, "C": i32, "NT": i32, "NBLK": i32}, block),
         block, cfg.warps),
        *[(tc.block_scan_kernel, sig({"hb": f32, "w": f32, "C": i32, "NBLK": i32, "block_len": i32},
                                     ("FUTURE", "NB", "BC")), {"FUTURE": future, "NB": cfg.nb, "BC": cfg.bc_carry},
           cfg.warps) for future in (False, True)],
        (tc.block_carry_kernel, sig({"h": f32, "hb": f32, "w": f32, "C": i32, "NT": i32, "NBLK": i32}, block),
         block, cfg.warps),
        (tc.chunk_fwd_kernel, sig({"k": f"*{dt}", "v": f"*{dt}", "w": f32, "u": f32, "h": f32, "y": f"*{dt}",
                                   "L": i32, "C": i32, "NT": i32}, limits), limits, cfg.warps),
        (tc.chunk_bwd_state_kernel, sig({"k": f"*{dt}", "v": f"*{dt}", "dy": f"*{dt}", "w": f32, "u": f32, "h": f32,
                                         "hg": f32, "L": i32, "C": i32, "NT": i32}, limits), limits, cfg.warps),
        (tc.chunk_bwd_kernel, sig({"k": f"*{dt}", "v": f"*{dt}", "dy": f"*{dt}", "w": f32, "u": f32, "h": f32,
                                   "hg": f32, "dk": f"*{dt}", "dv": f"*{dt}", "dw": f32, "du": f32, "L": i32, "C": i32,
                                   "NT": i32}, limits), limits, cfg.warps),
    ]


def ptxas_report(ptx: str, arch: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    gpu = "sm_90a" if arch == 90 else f"sm_{arch}"
    out = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", f.name, "-o", os.devnull],
                         capture_output=True, text=True, check=True).stderr
    os.unlink(f.name)
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out))
    return {"registers": regs, "spill_bytes": spills}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    ap.add_argument("--dtype", nargs="+", default=["fp32", "fp16", "bf16"])
    args = ap.parse_args()
    load_pack()
    from vrwkv_editor.kernels import triton_chunked as tc
    failed = False
    for arch in args.arch:
        for dt in args.dtype:
            for fn, sig, consts, warps in kernel_specs(tc, dt):
                row = {"arch": arch, "dtype": dt, "kernel": fn.fn.__name__, "constexprs": consts}
                try:
                    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                              target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
                    row.update(ptxas_report(compiled.asm["ptx"], arch), shared_bytes=compiled.metadata.shared)
                    failed |= row["spill_bytes"] > 0
                except Exception as e:  # report every kernel, then fail
                    row["error"] = f"{type(e).__name__}: {e}"
                    failed = True
                print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
