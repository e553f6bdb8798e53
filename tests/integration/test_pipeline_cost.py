"""bench.pipeline_cost inside a real ComfyUI, tiny: every configuration computes in the
precision asked (read off the UNet's output), Tune-A-Video as shipped trains only its mid
and decoder modules, and the minutes-per-edit table is built from the figures."""

import json
import os
import subprocess
from pathlib import Path

from comfy_server import comfyui_path, comfyui_python

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path())}
    proc = subprocess.run([comfyui_python(), "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_same_precision_for_every_configuration_and_shipped_tune_a_video(tmp_path):
    common = ["--depth", "shallow", "--size", "2", "--repeats", "1", "--in-process", "--results", str(tmp_path)]
    run("bench.pipeline_cost", *common, "--precision", "bf16", "--case", "tune-a-video:2", "tune-a-video-shipped:2",
        "default:2", "paper:2", "lean:2")
    run("bench.pipeline_cost", *common, "--precision", "fp32", "--phases", "tune", "--case", "plain:2", "default:2")
    bf16 = json.loads((tmp_path / "pipeline_cost_cpu_shallow_16px_bf16.json").read_text())
    fp32 = json.loads((tmp_path / "pipeline_cost_cpu_shallow_16px_fp32.json").read_text())
    for raw, dtype in ((bf16, "bfloat16"), (fp32, "float32")):
        for key, runs in raw.items():
            assert runs[0]["tune_unet_dtype"] == [dtype], key
            assert "matmul" in runs[0]["tf32"]
    assert bf16["tune-a-video|2|on"][0]["sample_unet_dtype"] == ["bfloat16"]
    assert "invert" not in fp32["plain|2|on"][0]                          # --phases tune
    shipped, faithful = bf16["tune-a-video-shipped|2|on"][0]["params"], bf16["tune-a-video|2|on"][0]["params"]
    assert 0 < shipped < faithful
    assert bf16["lean|2|on"][0]["params"] < bf16["paper|2|on"][0]["params"] == bf16["default|2|on"][0]["params"]
    out = run("bench.edit_minutes", "--precision", "bf16", "--size", "2", "--device", "cpu", "--results", str(tmp_path))
    assert "| 2 | default | bfloat16 |" in out and "| 2 | tune-a-video | bfloat16 |" in out
