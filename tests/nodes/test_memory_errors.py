"""Running out of memory: the nodes re-raise an OutOfMemoryError (ComfyUI still frees its
models on it) whose message names the settings that need less memory."""

import sys
import types

import pytest
import torch

from vrwkv_editor.nodes.common import MEMORY_KNOBS, is_out_of_memory, out_of_memory
from vrwkv_editor.nodes.tune import tuning_memory_knobs


@pytest.mark.parametrize("error,expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised(error, expected):
    assert is_out_of_memory(error) is expected


def test_replacement_error_is_still_an_out_of_memory_error():
    e = out_of_memory("Some Node", "on 24 frames of 512x512", ["knob one", "knob two"])
    assert isinstance(e, torch.cuda.OutOfMemoryError)
    assert str(e) == "Some Node ran out of memory on 24 frames of 512x512. To need less: knob one; knob two."


@pytest.mark.parametrize("gpu_has_bf16", [True, False])
def test_tuning_knobs_name_only_what_would_change(monkeypatch, gpu_has_bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_has_bf16)
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    costly = tuning_memory_knobs(False, torch.float32, "vrwkv+attn_q", gpu)
    bf16 = ["set training_dtype to auto (bfloat16)"] if gpu_has_bf16 else []
    assert costly == ["turn gradient_checkpointing on", *bf16, "set trainable to vrwkv", *MEMORY_KNOBS]
    assert tuning_memory_knobs(True, torch.bfloat16, "vrwkv", gpu) == list(MEMORY_KNOBS)
    assert tuning_memory_knobs(True, torch.float32, "vrwkv", cpu) == list(MEMORY_KNOBS)
    long_clip = tuning_memory_knobs(True, torch.float32, "vrwkv", cpu, window=0, frames=120)
    assert long_clip == ["set window to 16 (or fewer) frames per tuning step", *MEMORY_KNOBS]
    assert tuning_memory_knobs(True, torch.float32, "vrwkv", cpu, window=16, frames=120) == list(MEMORY_KNOBS)


def test_tuning_knobs_offer_the_mid_placement_and_the_lean_block_only_to_heavier_blocks():
    from vrwkv_editor.nodes.tune import LEAN_BLOCK_KNOB, MID_PLACEMENT_KNOB
    from vrwkv_editor.vrwkv.config import DEFAULT, LEAN, PAPER
    cpu = torch.device("cpu")

    def knobs(config):
        return tuning_memory_knobs(True, torch.float32, "vrwkv", cpu, config=config)
    assert knobs(DEFAULT) == knobs(PAPER) == [MID_PLACEMENT_KNOB, LEAN_BLOCK_KNOB, *MEMORY_KNOBS]
    assert knobs(PAPER.replace(placement="mid")) == [LEAN_BLOCK_KNOB, *MEMORY_KNOBS]
    assert knobs(LEAN.replace(channel_mix=1))[:2] == [MID_PLACEMENT_KNOB, LEAN_BLOCK_KNOB]
    assert knobs(LEAN) == [MID_PLACEMENT_KNOB, *MEMORY_KNOBS]
    assert knobs(LEAN.replace(placement="mid")) == list(MEMORY_KNOBS)


def test_ddim_sampling_out_of_memory_names_the_knobs(monkeypatch):
    """run_ddim turns the out-of-memory error of ComfyUI's sampler into one naming the
    node, the clip's size and the knobs (ComfyUI's modules stubbed: only our wrapping runs)."""
    from vrwkv_editor.nodes.sampling import run_ddim

    def sample_custom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    comfy = types.ModuleType("comfy")
    comfy.sample = types.SimpleNamespace(sample_custom=sample_custom)
    comfy.utils = types.SimpleNamespace(PROGRESS_BAR_ENABLED=False)
    comfy.samplers = types.SimpleNamespace(KSAMPLER=lambda fn, extra_options: (fn, extra_options))
    preview = types.SimpleNamespace(prepare_callback=lambda model, steps: None)
    for name, module in {"comfy": comfy, "comfy.sample": comfy.sample, "comfy.utils": comfy.utils,
                         "comfy.samplers": comfy.samplers, "latent_preview": preview}.items():
        monkeypatch.setitem(sys.modules, name, module)
    latent = torch.ones(24, 4, 64, 64)
    with pytest.raises(torch.OutOfMemoryError) as info:
        run_ddim("VRWKV KSampler (DDIM)", None, latent, latent, torch.ones(3), [], [], 7.0, 0.0, 0)
    message = str(info.value)
    assert message.startswith("VRWKV KSampler (DDIM) ran out of memory on 24 frames of 512x512. To need less:")
    assert all(knob in message for knob in MEMORY_KNOBS)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
