"""The GPU check (scripts/gpu_check.sh) runs here in its dry-run mode: on the CPU, in
Triton's interpreter, tiny shapes. It must pass, write every section, and fail (exit 1)
when a section finds a mismatch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrwkv_editor.kernels import triton_status

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")


def test_dry_run_passes_and_writes_every_section(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert "result: **PASS**" in text
    for title in ("Triton vs the torch backend", "Time, bandwidth and memory", "One real-size VRWKV block"):
        assert f"## {title}" in text
    assert text.count("| pass |") == 4 and "| True |" in text


def test_a_mismatch_fails_the_check(tmp_path, monkeypatch):
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("in-process dry run needs the interpreter chosen at import (the CPU's conftest does)")
    from bench import gpu_check
    monkeypatch.setattr(gpu_check, "DRY_CASES", gpu_check.DRY_CASES[1:2])   # L = 33, several chunks
    monkeypatch.setattr(gpu_check, "TOLERANCE", {"fp32": (1e-12, 1e-12)})  # fp32 cannot be this close
    monkeypatch.setattr(gpu_check, "performance", lambda *a: [])
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 1
    text = out.read_text()
    assert "result: **FAIL**" in text and "(FAILED)" in text and "MISMATCH" in text


@pytest.mark.parametrize("script", ["gpu_check", "gpu_bench"])
def test_script_finds_its_python_and_module_from_any_folder(tmp_path, script):
    """The shell entry points (their shared preamble scripts/gpu_python.sh) reach the module
    from another working directory, with the project venv under --dry-run."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / f"{script}.sh"), "--dry-run", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: {script}.py" in proc.stdout
