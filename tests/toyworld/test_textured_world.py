"""The textured toy world: its detector reads named attributes, position and texture detail
back from renders (also rotated, shifted, noisy, on backdrops it does not know), its clips
follow their tracks and pans, its detail metric tells a steady texture from a changing one,
and models of either world load with their own vocabulary."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from toyworld.fidelity import (
    attribute_consistency,
    detail_consistency,
    detections,
    named_fidelity,
)
from toyworld.model import WEIGHTS, ToyModel, load_model, save_model
from toyworld.textured import (
    TEXTURES,
    edit_cases,
    make_clip,
    random_specs,
    render,
)
from toyworld.textured_detector import NOTHING, detail_similarity, detect
from toyworld.worlds import get_world


def specs(n, seed=0):
    return random_specs(torch.Generator().manual_seed(seed), n)


@pytest.mark.parametrize("noise, centre_px, radius_px", [(0.0, 0.4, 0.3), (0.2, 0.8, 0.8)])
def test_detector_reads_random_renders(noise, centre_px, radius_px):
    """Also under heavy pixel noise (std 0.2 on [-1, 1]), which alone would break the mask."""
    g = torch.Generator().manual_seed(1)
    scenes = specs(100)
    found = [detect(render(s) + noise * torch.randn(3, 32, 32, generator=g)) for s in scenes]
    assert sum(d.named == s.named and d.texture == s.texture for s, d in zip(scenes, found)) / len(scenes) >= 0.99
    assert max(math.hypot(d.x - s.x, d.y - s.y) for s, d in zip(scenes, found)) < centre_px
    assert np.mean([abs(d.radius - s.radius) for s, d in zip(scenes, found)]) < radius_px


def test_stripe_orientation_follows_the_texture_rotation():
    base = replace(specs(1, seed=2)[0], texture="striped", shape="circle", radius=8.5, x=16, y=16)
    for degrees in range(0, 180, 15):
        d = detect(render(replace(base, angle=math.radians(degrees))))
        error = (math.degrees(d.angle) - degrees + 90) % 180 - 90
        assert d.texture == "striped" and abs(error) < 5, (degrees, d.angle)


def test_detail_moves_with_the_object_and_changes_with_the_texture():
    base = replace(specs(1, seed=3)[0], texture="spotted", shape="square", radius=7.5, x=15.0, y=16.0)
    here = detect(render(base))
    for dx, dy in [(0.3, 0.0), (1.7, -0.6), (-2.4, 1.1)]:   # the object and its texture shift together
        there = detect(render(replace(base, x=base.x + dx, y=base.y + dy)))
        assert abs(there.x - here.x - dx) < 0.2 and abs(there.y - here.y - dy) < 0.2
        assert detail_similarity(here, there) > 0.9
    moved_texture = detect(render(replace(base, phase=(base.phase[0] + 0.5, base.phase[1] + 0.5))))
    assert detail_similarity(here, moved_texture) < -0.5
    turned = detect(render(replace(base, angle=base.angle + math.pi / 4)))
    assert detail_similarity(here, turned) < 0.5


def test_detector_ignores_backdrop_and_distractors():
    for s in specs(20, seed=4):
        assert s.distractors or s.backdrop
        assert detect(render(replace(s, x=-40.0, y=-40.0))) is NOTHING


def test_clips_follow_their_track_and_pan():
    spec = replace(specs(1, seed=5)[0], colour="blue", texture="striped", shape="circle", radius=7.0)
    clip, track = make_clip("zigzag", 8, spec, seed=1, pan=(1.0, 0.0))
    found = detections(clip, detect)
    for d, (x, y) in zip(found, track.tolist()):
        assert d.named == ("blue", "circle") and d.texture == "striped" and abs(d.x - x) < 0.4 and abs(d.y - y) < 0.4
    assert detail_consistency(found, [True] * 8) > 0.95
    # the camera pans 1 px right per frame: away from the object, frame 1's column c is frame 0's column c + 1
    far = [c for c in range(31) if all(abs(c + 0.5 - x) > 11 and abs(c + 1.5 - x) > 11 for x in track[:2, 0].tolist())]
    assert far and torch.allclose(clip[1][:, :, far], clip[0][:, :, [c + 1 for c in far]], atol=1e-5)


def test_detail_consistency_sees_a_texture_that_changes_between_frames():
    spec = replace(specs(1, seed=6)[0], texture="striped", radius=7.5)
    steady, _ = make_clip("straight", 6, spec, seed=2)
    g = torch.Generator().manual_seed(7)
    _, track = make_clip("straight", 6, spec, seed=2)
    flickering = torch.stack([render(replace(spec, x=x, y=y, angle=float(torch.rand(1, generator=g)) * math.pi,
                                             phase=(float(torch.rand(1, generator=g)), 0.0)))
                              for x, y in track.tolist()])
    whole = [True] * 6
    steady_found, flicker_found = detections(steady, detect), detections(flickering, detect)
    assert detail_consistency(steady_found, whole) > 0.95
    assert detail_consistency(flicker_found, whole) < 0.5
    # a frame that lost the object or its texture counts as a change, not as a pair left out
    lost = [steady_found[0], steady_found[1], NOTHING, steady_found[3]]
    assert detail_consistency(lost, [True] * 4) < 0.4
    # the named attributes do not change, so only the detail metric sees this flicker
    assert attribute_consistency(flicker_found, whole) == 1.0
    assert named_fidelity(flicker_found, spec.named, whole) == 1.0


def test_a_texture_kind_flip_is_unnamed_detail():
    spec = replace(specs(1, seed=8)[0], colour="red", shape="circle", radius=7.5)
    kinds = [TEXTURES[i // 2 % 2] for i in range(6)]     # spots drawn between the stripes' dark bands
    frames = [render(replace(spec, x=16.0, y=16.0, texture=k, phase=(0.5 * (k == "spotted"), 0.0))) for k in kinds]
    found = detections(torch.stack(frames), detect)
    assert [d.texture for d in found] == kinds
    assert attribute_consistency(found, [True] * 6) == 1.0
    # the two pairs that flip score below 0, the three that keep their texture 1
    assert 0.2 < detail_consistency(found, [True] * 6) < 0.6


def test_edit_cases_change_one_named_attribute():
    cases = edit_cases(4)
    assert len({c.spec.named for c in cases}) == 4
    for case in cases:
        clip, track = case.clip(8)
        assert clip.shape == (8, 3, 32, 32) and track.shape == (8, 2)
        for edit in case.edits:
            assert sum(a != b for a, b in zip(edit, case.spec.named)) == 1
        assert detect(clip[0]).named == case.spec.named


def test_each_world_has_its_vocabulary_and_files_keep_their_world(tmp_path):
    torch.manual_seed(0)
    model = ToyModel({"base": 8, "mult": (1, 2), "attention_levels": (1,)}, world="textured")
    model.text(["a red circle", ""])
    for caption in ("a large red circle", "a red striped circle"):
        with pytest.raises(ValueError, match="vocabulary|words"):
            model.text([caption])
    path = save_model(model, tmp_path / "t.safetensors", {"step": "1"}, dtype=torch.float32)
    loaded, _ = load_model(path)
    assert loaded.world == "textured" and loaded.text.vocab == get_world("textured").vocab
    flat, _ = load_model(WEIGHTS)           # written before worlds had names: the flat world
    assert flat.world == "flat"
    flat.text(["a large red circle"])
    with pytest.raises(ValueError, match="unknown toy world"):
        ToyModel(world="wavy")


def test_training_runs_in_the_textured_world_and_resumes_only_its_own_configuration(tmp_path):
    from toyworld import train
    out = tmp_path / "m.safetensors"
    args = ["--world", "textured", "--out", str(out), "--steps", "2", "--eval-every", "1", "--eval-samples", "2",
            "--batch", "2", "--mult", "1", "2", "--attention-levels", "1"]
    train.main(args + ["--base", "8"])
    model, meta = load_model(out)
    assert model.world == "textured" and "--world textured" in meta["command"]
    # each evaluation replaces the run's own file: the last holds the whole history
    assert meta["step"] == "2" and len(json.loads(meta["history"])) == 2
    assert [f.name for f in tmp_path.glob("*.safetensors")] == ["m.safetensors"]
    with pytest.raises(ValueError, match="another configuration"):
        train.main(args + ["--base", "16"])
    out.with_name(out.name + ".resume.pt").unlink()
    with pytest.raises(FileExistsError, match="choose another --out"):     # a fresh run keeps an existing file
        train.main(args + ["--base", "8"])
