"""Every Triton kernel compiles ahead of time for sm_80 and sm_90 in each dtype it serves,
without register spills (the interpreter alone would accept code GPUs reject)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrwkv_editor.kernels import triton_status

TOOL = Path(__file__).resolve().parents[2] / "tools" / "triton_aot_check.py"


@pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")
def test_kernels_compile_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, env=env, timeout=900)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, proc.stderr[-3000:]
    problems = [r for r in rows if "error" in r or r["spill_bytes"] > 0]
    assert not problems, json.dumps(problems, indent=1)
    kernels = {(r["arch"], r["dtype"], r["kernel"]) for r in rows}
    assert len(kernels) == 2 * 3 * 7 and proc.returncode == 0
