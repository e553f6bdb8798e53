"""The GPU bench (scripts/gpu_bench.sh) runs here in its dry-run mode: on the CPU, in
Triton's interpreter, tiny sizes. Without ComfyUI its pipeline sections say they are
skipped; the checks and both kernel sections must run and write their files, and a failing
check must fail the bench."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrwkv_editor.kernels import triton_status

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(triton_status()[0] is None, reason="triton not installed")


def test_dry_run_passes_and_writes_every_section(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_bench", "--dry-run", "--results", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (tmp_path / "gpu_bench_cpu_dry_run.md").read_text()
    for title in ("checks", "kernel", "pipeline bf16", "sampling fp16", "pipeline fp32", "minutes per edit",
                  "kernel alternatives"):
        assert f"| {title} |" in summary
    assert "| PASS (gpu_cpu_dry_run.md) |" in summary
    assert summary.count("skipped: COMFYUI_PATH is not set") == 4
    assert "result: **PASS**" in (tmp_path / "gpu_cpu_dry_run.md").read_text()
    for name, rows in (("biwkv_kernel_cpu_dry_run.md", 2), ("biwkv_kernel_alternatives_cpu_dry_run.md", 2)):
        lines = [line for line in (tmp_path / name).read_text().splitlines() if line.startswith("| ") and "(1," in line]
        assert len(lines) == rows
        assert all(float(line.split("|")[-2]) < 1e-5 for line in lines)     # max error vs float64


def test_a_failing_check_fails_the_bench(tmp_path, monkeypatch):
    """The checks run as a subprocess: one that exits 1 fails the bench, which still runs
    (and reports) its other sections."""
    from bench import gpu_bench
    real = subprocess.run

    def run(cmd, **kwargs):
        if "bench.gpu_check" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "MISMATCH planted by the test")
        return real(cmd, **kwargs)
    monkeypatch.setattr(gpu_bench.subprocess, "run", run)
    monkeypatch.setattr(gpu_bench, "kernel_section", lambda *args: "")
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert gpu_bench.main(["--dry-run", "--results", str(tmp_path)]) == 1
    summary = (tmp_path / "gpu_bench_cpu_dry_run.md").read_text()
    assert "| checks |" in summary and "FAIL, exit 1" in summary and "MISMATCH planted" in summary
    assert "| kernel alternatives |" in summary
