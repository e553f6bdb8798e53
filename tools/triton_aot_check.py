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
    summary = {"w_ptr": "*fp32", "sum_ptr": "*fp32", "L": "i32", "C": "i32", "NT": "i32",
               "MODE": "constexpr", "BT": "constexpr", "BC": "constexpr"}

    def output(y, store_y, store_lden):  # forward: y in dt; backward: lden (+ y in fp32 for half)
        return (tc._fwd_output_kernel, {"k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "w_ptr": "*fp32", "u_ptr": "*fp32",
                                        "carry_ptr": "*fp32", "y_ptr": f"*{y}", "lden_ptr": "*fp32", "L": "i32",
                                        "C": "i32", "NT": "i32", "STORE_Y": "constexpr", "STORE_LDEN": "constexpr",
                                        "BT": "constexpr", "BC": "constexpr"},
                {"STORE_Y": store_y, "STORE_LDEN": store_lden, "BT": cfg.bt, "BC": cfg.bc_fwd}, cfg.warps)
    return [
        (tc._chunk_summary_kernel, {"p0": f"*{dt}", "p1": f"*{dt}", "p2": f"*{dt}", **summary},
         {"MODE": 0, "BT": cfg.bt, "BC": cfg.bc_fwd}, cfg.warps),
        (tc._chunk_summary_kernel, {"p0": "*fp32", "p1": f"*{dt}", "p2": "*fp32", **summary},
         {"MODE": 1, "BT": cfg.bt, "BC": cfg.bc_fwd}, cfg.warps),
        *[(tc._chunk_carry_kernel, {"sum_ptr": "*fp32", "w_ptr": "*fp32", "C": "i32", "NT": "i32",
                                    "chunk_len": "i32", "REVERSE": "constexpr", "NB": "constexpr", "BC": "constexpr"},
           {"REVERSE": rev, "NB": cfg.nb, "BC": cfg.bc_carry}, cfg.warps) for rev in (False, True)],
        output(dt, True, False),
        output("fp32", dt != "fp32", True),
        (tc._bwd_output_kernel, {"k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "y_ptr": "*fp32", "lden_ptr": "*fp32",
                                 "g_ptr": f"*{dt}", "w_ptr": "*fp32", "u_ptr": "*fp32", "fcarry_ptr": "*fp32",
                                 "bcarry_ptr": "*fp32", "gk_ptr": f"*{dt}", "gv_ptr": f"*{dt}",
                                 "gw_part_ptr": "*fp32", "gu_part_ptr": "*fp32", "L": "i32", "C": "i32",
                                 "NT": "i32", "BT": "constexpr", "BC": "constexpr"},
         {"BT": cfg.bt, "BC": cfg.bc_bwd}, cfg.warps),
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
