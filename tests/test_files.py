"""Atomic safetensors writes (weights and inversions): a failed write leaves the old file
whole and no temp file behind."""

import os

import pytest
import torch
from safetensors.torch import load_file

import vrwkv_editor.vrwkv.files as files


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "clip.safetensors"
    files.save_safetensors_atomic({"x": torch.ones(3)}, path, {"format": "test"})
    before = path.read_bytes()

    def fail(tensors, filename, metadata):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        files.save_safetensors_atomic({"x": torch.zeros(3)}, path, {"format": "test"})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["clip.safetensors"]
    assert torch.equal(load_file(path)["x"], torch.ones(3))


def test_creates_folders_and_stores_cpu_contiguous_tensors(tmp_path):
    path = files.save_safetensors_atomic({"x": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "a" / "b.safetensors", {})
    assert torch.equal(load_file(path)["x"], torch.arange(6.0).reshape(2, 3).t())
