"""Minutes per edit (bench/edit_minutes.py) from pipeline_cost's per-step figures: the
arithmetic of an edit (the tune node's default steps, the example workflow's inversion and
sampling steps), the ratio to Tune-A-Video and which cards an edit fits."""

import json

from bench import edit_minutes

GIB = 2**30


def run(tune, invert, sample, reserved_gib):
    phase = {"above_bytes": 0, "reserved_bytes": int(reserved_gib * GIB)}
    return {"params": 1, "tune_unet_dtype": ["bfloat16"], "context_bytes": GIB // 2, "machine": "Test GPU",
            "tune": {**phase, "step_s": [tune] * 3}, "invert": {**phase, "step_s": [invert] * 3},
            "sample": {**phase, "step_s": [sample] * 3}}


def test_minutes_and_cards_from_per_step_costs(tmp_path):
    raw = {"default|16|on": [run(0.2, 0.1, 0.3, 10.0)], "tune-a-video|16|on": [run(0.6, 0.2, 0.4, 13.0)],
           "default|120|on|w16": [run(0.2, 1.0, 3.0, 11.0)], "plain|16|on": [run(0.5, 0.1, 0.2, 9.0)]}
    (tmp_path / "pipeline_cost_cuda_full_512px_bf16.json").write_text(json.dumps(raw))
    edit_minutes.main(["--precision", "bf16", "--size", "64", "--device", "cuda", "--results", str(tmp_path)])
    text = (tmp_path / "edit_minutes_cuda_bf16.md").read_text()
    s = edit_minutes.edit_settings()
    assert (s["tune_steps"], s["invert_steps"], s["sample_steps"], s["cfg"]) == (500, 50, 50, 12.5)
    default = (500 * 0.2 + 50 * 0.1 + 50 * 0.3) / 60
    tav = (500 * 0.6 + 50 * 0.2 + 50 * 0.4) / 60
    assert f"| 16 | default | bfloat16 | 0.2 | 0.1 | 0.3 | {default:.1f} | {default / tav:.2f}x | 10.5 | yes | yes | yes |" in text
    assert f"| 16 | tune-a-video | bfloat16 | 0.6 | 0.2 | 0.4 | {tav:.1f} | 1.00x | 13.5 | no | yes | yes |" in text
    assert "| 120 (windows of 16, overlap 4) | default |" in text and "Test GPU" in text
    assert "| plain |" not in text
