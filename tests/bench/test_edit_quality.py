"""The edit-quality benchmark's machinery: confidence intervals, paired comparisons, and a
tiny end-to-end run that resumes instead of redoing finished units."""

import json

import numpy as np
import pytest

from bench import edit_quality
from bench.quality import report
from bench.quality.methods import NODE_STEPS, method
from bench.quality.run import Protocol, load_results, units


def test_ci95_is_the_student_t_interval():
    mean, half = report.ci95([1.0, 2.0, 3.0, float("nan")])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    assert report.ci95([5.0]) == (5.0, pytest.approx(float("nan"), nan_ok=True))


def record(spec, kind, case, seed, value):
    return {"spec": spec, "method": spec, "kind": kind, "case": case, "tune_seed": seed, "frames": 8,
            "rows": [{"track": "generation", "role": "source", "noise": "independent", "track_px": value}]}


def test_paired_rows_match_units_and_call_a_difference_only_outside_the_interval():
    untuned = [record("untuned", "plain", c, 1, v) for c, v in (("a", 6.0), ("b", 7.0), ("c", 5.0))]
    better = [record("m", "vrwkv", c, s, v - 2.0 + 0.1 * s) for c, v in (("a", 6.0), ("b", 7.0), ("c", 5.0))
              for s in (1, 2)]
    same = [record("n", "vrwkv", c, s, v + (0.5 if s == 1 else -0.5)) for c, v in (("a", 6.0), ("b", 7.0), ("c", 5.0))
            for s in (1, 2)]
    lines = report.paired({"untuned": untuned, "m": better, "n": same}, "untuned", "track_px", report.HEADLINE,
                          "{:.2f}")
    assert "| m | 6 | -1.85 ± 0.06 | lower |" in lines
    assert lines[-1].startswith("| n | 6 | 0.00 ±") and lines[-1].endswith("| no difference shown |")


def edit_record(spec, kind, case, seed, flicker, detail=None):
    row = {"track": "edit", "flicker": flicker, **({} if detail is None else {"detail": detail})}
    return {"spec": spec, "method": spec, "kind": kind, "case": case, "tune_seed": seed, "frames": 8, "rows": [row]}


def test_the_edit_tracks_paired_table_marks_only_differences_outside_the_interval():
    cases = (("a", 0.010), ("b", 0.020), ("c", 0.015))
    untuned = [edit_record("untuned", "plain", c, 1, f, 0.5) for c, f in cases]
    steadier = [edit_record("m", "vrwkv", c, s, f - 0.005 + 0.0001 * s, 0.5 + 0.01 * s) for c, f in cases for s in (1, 2)]
    lines = report.paired_table({"untuned": untuned, "m": steadier}, "untuned", report.EDIT_TEMPORAL)
    assert lines[0] == "| method minus untuned | units | flicker ↓ | detail consistency ↑ |"
    assert lines[-1] == "| m | 6 | -0.0049 ± 0.0001 **lower** | 0.015 ± 0.006 **higher** |"
    # a world without texture measures no detail: the column is left out, not shown as n/a
    flat = {"untuned": [edit_record("untuned", "plain", c, 1, f) for c, f in cases]}
    assert [h for h, *_ in report.measured(flat, report.EDIT_TEMPORAL)] == ["flicker ↓"]


def test_methods_by_name_and_rate():
    assert method("tav@1e-3").lr == 1e-3 and method("tav").lr == 3e-5
    with pytest.raises(ValueError, match="unknown method"):
        method("nope")
    with pytest.raises(ValueError, match="not tuned"):
        method("untuned@1e-3")


def test_unit_keys_written_before_cross_frame_attention_still_match():
    """A committed results file resumes: a paper-block unit's key is the one it had before
    frame_attention existed; a cross-frame unit's key names it."""
    paper, cross = (units([name], Protocol())[0].key() for name in ("paper", "paper-sc"))
    assert "config=BlockConfig(placement='skip+mid', min_level=0, channel_mix=4, rank=None, fused_rkv=False, " \
           "skip_fusion='gate', half_precision_sampling=False, channel_mix_max_level=None)" in paper
    assert "frame_attention='first+previous'" in cross


def test_units_give_untuned_methods_one_tuning_seed():
    protocol = Protocol(clips=2, frames=(8, 16), tune_seeds=(1, 2))
    found = units(["untuned", "default"], protocol)
    assert sum(u.method.kind == "plain" for u in found) == 2 * 2 and len(found) == 2 * 2 + 2 * 2 * 2
    assert len({u.key() for u in found}) == len(found)


def test_a_tiny_run_writes_its_tables_and_strip_and_resumes(tmp_path):
    args = ["--methods", "untuned", "default", "--clips", "1", "--frames", "3", "--tune-seeds", "1",
            "--sample-seeds", "5", "--tune-steps", "1", "--ddim-steps", "2", "--results", str(tmp_path),
            "--cache", str(tmp_path / "cache"), "--name", "q"]
    edit_quality.main(args)
    lines = (tmp_path / "q_cpu.jsonl").read_text().splitlines()
    assert len(lines) == 2
    unit = json.loads(lines[1])
    roles = {(r["track"], r.get("role"), r.get("noise")) for r in unit["rows"]}
    assert roles == {("generation", "source", "independent"), ("generation", "source", "shared"),
                     ("generation", "edit", "independent"), ("edit", "edit", None)}
    text = (tmp_path / "q_cpu.md").read_text()
    assert "## Generation track, 3 frames" in text and "## Edit track, 3 frames" in text
    assert "| VRWKV, the nodes' defaults | 1 |" in text and "Partial" not in text
    assert (tmp_path / "q_cpu_strip.png").stat().st_size > 0
    edit_quality.main(args)                                       # nothing left to do
    assert (tmp_path / "q_cpu.jsonl").read_text().splitlines() == lines


def test_a_run_with_other_methods_or_protocol_does_not_replace_a_report_unasked(tmp_path):
    args = ["--methods", "untuned", "--clips", "1", "--frames", "3", "--tune-seeds", "1", "--sample-seeds", "5",
            "--ddim-steps", "2", "--tracks", "edit", "--results", str(tmp_path), "--cache", str(tmp_path / "c")]
    edit_quality.main(args)                              # default stem: quality_3_500steps
    report = tmp_path / "quality_3_500steps_cpu.md"
    first = report.read_text()
    edit_quality.main(args)                              # the same run again resumes
    with pytest.raises(SystemExit, match="another run"):
        edit_quality.main([*args, "--cfg", "5"])
    with pytest.raises(SystemExit, match="another run"):
        edit_quality.main(["--methods", "untuned", "tav", *args[2:]])
    assert report.read_text() == first
    edit_quality.main([*args, "--cfg", "5", "--overwrite"])
    assert "cfg 5.0" in report.read_text()


def test_the_textured_world_runs_and_measures_its_unnamed_detail(tmp_path):
    args = ["--world", "textured", "--methods", "untuned", "--clips", "1", "--frames", "3", "--tune-seeds", "1",
            "--sample-seeds", "5", "--tune-steps", "1", "--ddim-steps", "2", "--tracks", "edit",
            "--results", str(tmp_path), "--cache", str(tmp_path / "cache"), "--name", "t"]
    edit_quality.main(args)
    unit = json.loads((tmp_path / "t_cpu.jsonl").read_text())
    assert all(np.isfinite(r["detail"]) for r in unit["rows"]) and len(unit["rows"]) == 2
    assert "detail consistency ↑" in (tmp_path / "t_cpu.md").read_text()


def test_a_bare_run_remakes_the_committed_headline_and_redoes_nothing():
    """`bash scripts/bench.sh edit_quality` resumes quality_500steps_cpu.*, not another report."""
    args, protocol = edit_quality.parse([])
    assert args.name == f"quality_{NODE_STEPS}steps"
    done = load_results(edit_quality.RESULTS / f"{args.name}_cpu.jsonl")
    assert all(u.key() in done for u in units(args.methods, protocol))


def test_each_world_and_clip_length_has_its_own_default_report():
    args, protocol = edit_quality.parse(["--world", "textured", "--frames", "16", "--tune-steps", "300"])
    assert args.name == "quality_textured_16_300steps"
    assert (protocol.gen_prompts, protocol.shared) == ("source", "none")
    args, protocol = edit_quality.parse(["--gen-prompts", "source", "--name", "x"])
    assert (args.name, protocol.gen_prompts, protocol.shared) == ("x", "source", "source")
