"""The inverted LATENT's metadata checks and its file: atomic write, round trip, and a clear
ValueError for every mismatch between a saved inversion and what is asked of it."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from vrwkv_editor.vrwkv.ddim import ddim_sigmas
from vrwkv_editor.vrwkv.inversion import (LATENT_KEY, Inversion, check_saved, check_sigmas_match, inversion_of,
                                          inversion_path, load_inversion, save_inversion)

TABLE = torch.linspace(0.03, 14.6, 1000)
SHAPE = (8, 4, 8, 8)


def make(steps=20, cfg=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    source, inverted = torch.randn(SHAPE, generator=g), 80 * torch.randn(SHAPE, generator=g)
    sigmas = ddim_sigmas(TABLE, steps)
    return source, inverted, sigmas, Inversion.of(inverted, steps, cfg, 0, sigmas)


def test_metadata_survives_dict_round_trip_and_checks_pass_for_the_right_latent():
    _, inverted, sigmas, info = make()
    latent = {"samples": inverted, LATENT_KEY: json.loads(json.dumps(info.to_dict()))}
    assert inversion_of(latent, SHAPE) == info
    check_sigmas_match(info, sigmas, 20, 1.0)


def test_inverted_latent_errors():
    _, inverted, sigmas, info = make()
    with pytest.raises(ValueError, match="no VRWKV inversion metadata.*SaveLatent"):
        inversion_of({"samples": inverted}, SHAPE)
    latent = {"samples": inverted, LATENT_KEY: info.to_dict()}
    with pytest.raises(ValueError, match=r"shape \(8, 4, 8, 8\) but latent_image has \(4, 4, 8, 8\)"):
        inversion_of(latent, (4, 4, 8, 8))
    with pytest.raises(ValueError, match="changed after inversion"):
        inversion_of({"samples": inverted * 0.5, LATENT_KEY: info.to_dict()}, SHAPE)
    with pytest.raises(ValueError, match="made with 20 DDIM steps.*steps=50, denoise=1.0: set steps to 20"):
        check_sigmas_match(info, ddim_sigmas(TABLE, 50), 50, 1.0)
    with pytest.raises(ValueError, match="steps=20, denoise=0.5"):
        check_sigmas_match(info, ddim_sigmas(TABLE, 20, 0.5), 20, 0.5)
    with pytest.raises(ValueError, match="noise schedule differs"):
        check_sigmas_match(info, ddim_sigmas(TABLE * 1.1, 20), 20, 1.0)


def test_file_round_trip_with_metadata(tmp_path):
    source, inverted, sigmas, info = make()
    path = inversion_path(str(tmp_path / "vrwkv_inversions"), "clip_a")
    assert path == str(tmp_path / "vrwkv_inversions" / "clip_a.safetensors")
    save_inversion(path, inverted, source, info)
    assert os.listdir(tmp_path / "vrwkv_inversions") == ["clip_a.safetensors"]
    loaded, saved_source, loaded_info = load_inversion(path)
    assert torch.equal(loaded, inverted) and torch.equal(saved_source, source) and loaded_info == info
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "vrwkv-ddim-inversion/1" and json.loads(meta["shape"]) == list(SHAPE)
    assert json.loads(meta["inversion"])["steps"] == 20 and "leading" in json.loads(meta["inversion"])["schedule"]
    check_saved(path, saved_source, loaded_info, source, 20, 1.0, 0, sigmas)


def test_saving_an_inversion_under_a_taken_name_keeps_the_old_file(tmp_path):
    source, inverted, sigmas, info = make()
    path = inversion_path(str(tmp_path), "clip")
    assert save_inversion(path, inverted, source, info) == path
    again = save_inversion(path, inverted * 2, source, info)
    assert again == str(tmp_path / "clip_00001.safetensors")
    assert torch.equal(load_inversion(path)[0], inverted) and torch.equal(load_inversion(again)[0], inverted * 2)


def test_saved_inversion_mismatches_name_the_problem_and_the_fix(tmp_path):
    source, inverted, sigmas, info = make()
    path = inversion_path(str(tmp_path), "clip")
    save_inversion(path, inverted, source, info)
    _, saved_source, saved_info = load_inversion(path)
    args = (path, saved_source, saved_info)
    with pytest.raises(ValueError, match=r"shape \(8, 4, 8, 8\), this one is \(2, 4, 8, 8\).*invert and save"):
        check_saved(*args, source[:2], 20, 1.0, 0, sigmas)
    with pytest.raises(ValueError, match="different clip.*invert and save"):
        check_saved(*args, make(seed=1)[0], 20, 1.0, 0, sigmas)
    check_saved(*args, source * 1.005, 20, 1.0, 0, sigmas)  # the same clip encoded in another precision
    with pytest.raises(ValueError, match="refine=0; this node asks for steps=20, cfg=1.0, refine=3"):
        check_saved(*args, source, 20, 1.0, 3, sigmas)
    with pytest.raises(ValueError, match="steps=20, cfg=1.0, refine=0; this node asks for steps=50"):
        check_saved(*args, source, 50, 1.0, 0, ddim_sigmas(TABLE, 50))
    with pytest.raises(ValueError, match="cfg=3.0"):
        check_saved(*args, source, 20, 3.0, 0, sigmas)
    with pytest.raises(ValueError, match="noise schedule differs"):
        check_saved(*args, source, 20, 1.0, 0, ddim_sigmas(TABLE * 1.1, 20))


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no saved inversion.*invert and save"):
        load_inversion(str(tmp_path / "missing.safetensors"))
    from safetensors.torch import save_file
    other = str(tmp_path / "weights.safetensors")
    save_file({"w": torch.zeros(2)}, other, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a VRWKV DDIM inversion file"):
        load_inversion(other)


@pytest.mark.parametrize("name", ["", "  ", "../x", "a/b", "a\\b", ".hidden", "c:d"])
def test_save_name_must_be_a_plain_file_name(name):
    with pytest.raises(ValueError, match="not a plain file name"):
        inversion_path("/out", name)


def test_save_name_extension_is_optional():
    assert inversion_path("/out", "clip.safetensors") == inversion_path("/out", "clip") == "/out/clip.safetensors"
