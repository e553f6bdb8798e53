"""Safetensors writes (weights and inversions): atomic (a failed write leaves no partial
file and no temp file behind) and never over an existing file (counter suffix)."""

import os

import pytest
import torch
from safetensors.torch import load_file

import vrwkv_editor.vrwkv.files as files


def test_failed_write_leaves_the_other_files_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "clip.safetensors"
    files.save_safetensors_atomic({"x": torch.ones(3)}, path, {"format": "test"})
    before = path.read_bytes()

    def fail(tensors, filename, metadata):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        files.save_safetensors_atomic({"x": torch.zeros(3)}, path, {"format": "test"})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["clip.safetensors"]   # no clip_00001 either
    assert torch.equal(load_file(path)["x"], torch.ones(3))


def test_creates_folders_and_stores_cpu_contiguous_tensors(tmp_path):
    path = files.save_safetensors_atomic({"x": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "a" / "b.safetensors", {})
    assert torch.equal(load_file(path)["x"], torch.arange(6.0).reshape(2, 3).t())


def test_an_existing_name_gets_the_next_counter_and_is_never_replaced(tmp_path):
    path = tmp_path / "clip.safetensors"
    written = [files.save_safetensors_atomic({"x": torch.full((2,), float(i))}, path, {}) for i in range(3)]
    assert written == [path, tmp_path / "clip_00001.safetensors", tmp_path / "clip_00002.safetensors"]
    assert [float(load_file(p)["x"][0]) for p in written] == [0.0, 1.0, 2.0]
    (tmp_path / "clip_00001.safetensors").unlink()           # the first free name is reused
    assert files.save_safetensors_atomic({"x": torch.ones(1)}, path, {}) == tmp_path / "clip_00001.safetensors"
    assert sorted(os.listdir(tmp_path)) == ["clip.safetensors", "clip_00001.safetensors", "clip_00002.safetensors"]


def test_without_hard_links_an_existing_name_is_still_kept(tmp_path, monkeypatch):
    path = tmp_path / "clip.safetensors"
    files.save_safetensors_atomic({"x": torch.zeros(1)}, path, {})

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(files.os, "link", no_links)
    assert files.save_safetensors_atomic({"x": torch.ones(1)}, path, {}) == tmp_path / "clip_00001.safetensors"
    assert float(load_file(path)["x"][0]) == 0.0


def test_saved_files_get_the_users_usual_mode(tmp_path):
    """The temp file comes from mkstemp (0600); the saved file must be readable as any file
    the user writes (0666 less the umask), or other tools and users cannot open it."""
    mask = os.umask(0o022)
    try:
        path = files.save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "w.safetensors", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
