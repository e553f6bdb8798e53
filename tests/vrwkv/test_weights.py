"""VRWKV weights files: bit-exact round trip, atomic writes, and the documented errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from toyworld.unet import latent_unet
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks
from vrwkv_editor.vrwkv.weights import (FINGERPRINT_SAMPLES, FORMAT, base_mismatch, check_state_matches, load_weights,
                                        resolve_inside, save_weights, unet_fingerprint)


def trained_blocks(seed=0, placement="skip+mid"):
    torch.manual_seed(seed)
    blocks = VRWKVBlocks(block_spec(unet_layout(latent_unet()), BlockConfig(placement, channel_mix=2)))
    with torch.no_grad():
        for p in blocks.parameters():
            p.add_(torch.randn_like(p))
    return blocks


def test_round_trip_is_bit_exact(tmp_path):
    blocks = trained_blocks()
    blocks.set_norm_frames(8)
    deltas = {"output_blocks.0.0.conv1.weight": torch.randn(16, 32, 3, 3, dtype=torch.float16)}
    info = {"frames": 8, "prompt": "a man skiing", "steps": 300, "lr": 3e-5}
    path = save_weights(tmp_path / "clip", blocks.state_dict(), blocks.spec, deltas, info)
    assert path.name == "clip.safetensors" and path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.safetensors"]      # no temp file left
    spec, state, base, info2 = load_weights(path)
    assert spec == json.loads(json.dumps(blocks.spec)) and info2 == info
    fresh = VRWKVBlocks(spec)
    fresh.load_state_dict(state)
    for (k, a), (k2, b) in zip(blocks.state_dict().items(), fresh.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert base.keys() == deltas.keys() and all(torch.equal(base[k], deltas[k]) for k in deltas)


def test_saving_under_a_taken_name_keeps_the_old_file(tmp_path):
    path = save_weights(tmp_path / "w.safetensors", trained_blocks(0).state_dict(), trained_blocks(0).spec)
    again = save_weights(path, trained_blocks(1).state_dict(), trained_blocks(1).spec)
    assert again == tmp_path / "w_00001.safetensors"
    key = "blocks.mid.spatial_mix.decay"
    for written, seed in ((path, 0), (again, 1)):
        assert torch.equal(load_weights(written)[1][key], trained_blocks(seed).state_dict()[key])


def test_layout_mismatch_names_the_key(tmp_path):
    mid_only = trained_blocks(placement="mid")
    both = trained_blocks(placement="skip+mid")
    expected = {k: v.shape for k, v in both.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing tensor 'blocks\.skip_"):
        check_state_matches(mid_only.state_dict(), expected, "w.safetensors")
    state = dict(both.state_dict())
    state["blocks.mid.spatial_mix.decay"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'blocks\.mid\.spatial_mix\.decay' has shape \(3,\)"):
        check_state_matches(state, expected, "w.safetensors")
    with pytest.raises(ValueError, match="unexpected tensor"):
        check_state_matches(both.state_dict(), {k: v for k, v in expected.items() if "skip_0" not in k}, "w")


def test_foreign_and_pickle_files_are_refused(tmp_path):
    other = tmp_path / "lora.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a VRWKV weights file"):
        load_weights(other)
    pickle = tmp_path / "weights.pt"
    torch.save({"x": torch.zeros(2)}, pickle)
    with pytest.raises(ValueError, match="never loaded"):
        load_weights(pickle)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(broken)
    assert FORMAT.startswith("vrwkv-editor")


def test_names_cannot_escape_the_folder(tmp_path):
    assert resolve_inside(tmp_path, "clip/edit.safetensors") == (tmp_path / "clip" / "edit.safetensors").resolve()
    for bad in ("../evil.safetensors", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError, match="outside"):
            resolve_inside(tmp_path, bad)


def test_non_finite_weights_are_refused_on_load(tmp_path):
    """The Bi-WKV kernels no longer check w and u every call (a GPU sync): a diverged file
    is refused where it enters, naming the tensor."""
    blocks = trained_blocks()
    state = dict(blocks.state_dict())
    state["blocks.mid.spatial_mix.first"] = state["blocks.mid.spatial_mix.first"].clone()
    state["blocks.mid.spatial_mix.first"][2] = float("inf")
    path = save_weights(tmp_path / "diverged", state, blocks.spec)
    with pytest.raises(ValueError, match=r"'vrwkv\.blocks\.mid\.spatial_mix\.first' holds non-finite"):
        load_weights(path)


def test_a_file_saved_before_the_lean_options_loads_and_computes_as_it_did():
    """tests/data/weights_0.1.0.safetensors was saved by the 0.1.0 blocks (a spec without the
    lean-option keys; skip+mid, hidden ratio 2, perturbed parameters); the output that code
    gave on latent_unet() is stored beside it (its metadata names the commit). Today's code
    must build the same blocks from its layout metadata and give that output."""
    from safetensors.torch import load_file

    from vrwkv_editor.vrwkv.patch import VRWKVPatch
    data = Path(__file__).resolve().parents[1] / "data"
    spec, state, _, _ = load_weights(data / "weights_0.1.0.safetensors")
    assert "fused_mix" not in spec                       # the old layout, as saved
    blocks = VRWKVBlocks(spec)
    check_state_matches(state, {k: v.shape for k, v in blocks.state_dict().items()}, "weights_0.1.0")
    blocks.load_state_dict(state)
    torch.manual_seed(0)
    unet = latent_unet()
    g = torch.Generator().manual_seed(0)
    x, t, context = torch.randn(6, 4, 8, 8, generator=g), torch.full((6,), 500.0), torch.randn(6, 5, 12, generator=g)
    with torch.no_grad():
        plain = unet(x, t, context, {"cond_or_uncond": [0, 1], "patches": {}})
        out = unet(x, t, context, {"cond_or_uncond": [0, 1], "patches": {"output_block_patch": [VRWKVPatch(blocks)]}})
    expected = load_file(data / "weights_0.1.0_unet_output.safetensors")["output"]
    assert not torch.allclose(plain, expected, atol=1e-3)   # the blocks matter to the stored output
    assert torch.allclose(out, expected, atol=1e-6, rtol=1e-5), (out - expected).abs().max()


def fingerprint(state: dict) -> str:
    return unet_fingerprint(state, state.__getitem__)


def unet_state(seed=0) -> dict:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in latent_unet().state_dict().items()}


def test_fingerprint_tells_a_changed_unet_from_the_same_one():
    """Same weights, same id (also as another float16/float32 copy and in another key
    order); a fine-tune (every tensor moved a little) or one retrained tensor, another id."""
    state = unet_state()
    same = fingerprint(state)
    assert len(same) == 16 and same == fingerprint(unet_state())
    assert same == fingerprint({k: v.half() for k, v in reversed(state.items())})
    assert same == fingerprint({k: v.half().float() for k, v in state.items()})
    assert same != fingerprint(unet_state(seed=1))
    g = torch.Generator().manual_seed(0)
    assert same != fingerprint({k: v + 1e-2 * torch.randn(v.shape, generator=g) for k, v in state.items()})
    key = next(k for k in state if k.endswith("attn2.to_k.weight"))
    assert same != fingerprint({**state, key: state[key] * 1.01})
    renamed = {k.replace("attn2.to_k.", "attn2.to_k2."): v for k, v in state.items()}   # same order, other names
    assert same != fingerprint(renamed)
    assert same != fingerprint({**state, key: state[key].reshape(-1, 1)})              # same values, other shape


def test_fingerprint_covers_a_lora_and_samples_the_rest():
    """A LoRA (a low-rank difference on the attention projections, as ComfyUI merges one)
    changes the id: the weights a file was tuned through are its base. What it does not
    see: a change confined to values between the sampled positions."""
    state = unet_state()
    g = torch.Generator().manual_seed(1)
    lora = {}
    for k, v in state.items():
        if k.endswith(("to_q.weight", "to_k.weight", "to_v.weight")):
            up, down = torch.randn(v.shape[0], 4, generator=g), torch.randn(4, v.shape[1], generator=g)
            lora[k] = v + 0.05 * up @ down
    assert fingerprint(state) != fingerprint({**state, **lora})
    key = max(state, key=lambda k: state[k].numel())
    flat = state[key].clone().reshape(-1)
    assert flat.numel() > FINGERPRINT_SAMPLES
    flat[1] += 1.0                                        # between sampled positions 0 and (n-1)/15
    assert fingerprint(state) == fingerprint({**state, key: flat.reshape(state[key].shape)})


def test_base_mismatch_names_both_models_and_passes_old_files():
    ours = {"fingerprint": "00aa00aa00aa00aa", "checkpoint": "v1-5-pruned-emaonly.safetensors"}
    other = {"fingerprint": "11bb11bb11bb11bb", "checkpoint": "dreamshaper_8.safetensors + LoRA style.safetensors (0.8)"}
    assert base_mismatch(None, ours, "clip.safetensors") is None                     # saved before fingerprints
    assert base_mismatch(dict(ours, checkpoint=None), ours, "clip.safetensors") is None
    warning = base_mismatch(ours, other, "clip.safetensors")
    for part in ("clip.safetensors", *ours.values(), *other.values(), "tune again"):
        assert part in warning
    assert "(None)" not in base_mismatch(dict(ours, checkpoint=None), other, "w")
