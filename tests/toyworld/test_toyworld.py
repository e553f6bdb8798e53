"""The toy world of the edit-quality benchmark: renderer and detector agree, clips follow
their paths, and the toy UNet takes the pack's patch and ComfyUI-style transformer patches."""

import math
from pathlib import Path

import pytest
import torch

from toyworld.detector import Detection, detect
from toyworld.fidelity import attribute_consistency
from toyworld.model import ToyModel, load_model, save_model
from toyworld.text import tokenize
from toyworld.unet import ToyUNet, attention
from toyworld.world import PATH_KINDS, SIZE, Spec, make_clip, random_specs, render
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.blocks import SpatialMix3D
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch


def test_detector_reads_random_renders():
    specs = random_specs(torch.Generator().manual_seed(0), 300)
    found = [detect(render(s)) for s in specs]
    right = sum(d.colour == s.colour and d.shape == s.shape and d.size == s.size for s, d in zip(specs, found))
    assert right / len(specs) >= 0.99
    assert max(abs(d.x - s.x) + abs(d.y - s.y) for s, d in zip(specs, found)) < 1.0


def test_detector_finds_nothing_on_the_background():
    empty = render(Spec("red", "circle", "small", -50, -50))
    assert detect(empty).colour is None


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_clips_follow_their_track(kind):
    clip, track = make_clip(kind, 12, Spec("blue", "square", "large", 0, 0), seed=5)
    assert clip.shape == (12, 3, SIZE, SIZE) and track.shape == (12, 2)
    assert (track[1:] - track[:-1]).norm(dim=1).mean() > 1.0     # it moves
    for frame, (x, y) in zip(clip, track.tolist()):
        d = detect(frame)
        if d.x is not None and not d.touches_edge:    # whole object: centroid = true centre
            assert abs(d.x - x) < 0.6 and abs(d.y - y) < 0.6


def test_exit_path_leaves_the_frame_and_comes_back():
    clip, track = make_clip("exit", 16, Spec("red", "circle", "small", 0, 0), seed=0)
    outside = [detect(f).colour is None for f in clip]
    assert outside[len(outside) // 2] and not outside[0] and not outside[-1]


def test_captions_outside_the_vocabulary_are_refused():
    assert tokenize("a large red circle")[1:] != tokenize("a small red circle")[1:]
    with pytest.raises(ValueError, match="vocabulary"):
        tokenize("a purple circle")


def small_unet():
    torch.manual_seed(0)
    return ToyUNet(base=16, mult=(1, 2, 2), attention_levels=(1, 2))


def call(unet, x, options=None):
    t = torch.tensor([500] * x.shape[0])
    context = torch.randn(x.shape[0], 4, 64, generator=torch.Generator().manual_seed(1))
    return unet(x, t, context, options or {})


def test_pack_reads_the_layout_and_its_patch_is_an_identity_at_init():
    unet = small_unet()
    layout = unet_layout(unet)
    assert len(layout.skips) == len(unet.input_blocks) == len(unet.output_blocks)
    assert [p.level for p in layout.skips] == [2, 2, 1, 1, 0, 0]
    spec = block_spec(layout, BlockConfig())
    assert set(spec["blocks"]) == {"mid", *(f"skip_{i}" for i in range(6))}
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    patch = VRWKVPatch(VRWKVBlocks(spec))
    calls = []
    spy = lambda h, hsp, opts: (calls.append(opts["block"]), (h, hsp))[1]
    options = {"patches": {"output_block_patch": [patch, spy]}, "cond_or_uncond": [0, 1]}
    with torch.no_grad():
        plain, patched = call(unet, x), call(unet, x, options)
    assert calls == [("output", i) for i in range(6)]
    assert torch.equal(plain, patched)
    # the patch is live: a non-zero output projection changes the result
    with torch.no_grad():
        patch.blocks.blocks["skip_5"].spatial_mix.output.weight.fill_(0.1)
        assert not torch.allclose(call(unet, x, options), plain)


def test_attribute_consistency_counts_agreeing_neighbours_among_the_selected_frames():
    def found(colour, shape):
        return Detection(colour, shape, "large", 1.0, 1.0, 50, False)
    nothing = Detection(None, None, None, None, None, 0, False)
    frames = [found("red", "circle"), found("red", "circle"), found("red", "square"), found("red", "square"), nothing]
    whole = [True] * 5
    assert attribute_consistency(frames, whole) == 2 / 4       # the flip and the lost object break a pair
    assert attribute_consistency(frames, [True, True, False, True, True]) == 1 / 2   # only (0,1) and (3,4)
    assert math.isnan(attribute_consistency(frames, [True, False, True, False, True]))


@pytest.mark.parametrize("scaling", ["length", "frame", "none"])
def test_decay_scaling_ablation_sets_the_per_token_decay_the_blocks_use(scaling):
    from toyworld.pipeline import scale_decay
    spec = block_spec(unet_layout(small_unet()), BlockConfig("mid"))
    blocks = VRWKVBlocks(spec)
    scale_decay(blocks, scaling)
    mix = next(m for m in blocks.modules() if isinstance(m, SpatialMix3D))
    with torch.no_grad():
        mix.decay.uniform_(0.5, 2.0)
        mix.first.uniform_(0.5, 2.0)
    T, H, W, C = 4, 8, 8, mix.decay.shape[0]
    x = torch.randn(1, T, H, W, C, generator=torch.Generator().manual_seed(4))
    used = []
    original = mix.decay_and_bonus
    mix.decay_and_bonus = lambda tokens: used.append(original(tokens)) or used[-1]
    mix(x, x)
    divisor = {"length": T * H * W, "frame": H * W, "none": 1}[scaling]
    assert torch.equal(used[0][0], mix.decay / divisor) and torch.equal(used[0][1], mix.first / divisor)
    with pytest.raises(ValueError, match="unknown decay scaling"):
        scale_decay(blocks, "per clip")


def test_transformer_patch_points_follow_comfyui():
    unet = small_unet()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    seen = {"attn1_patch": [], "attn1": [], "middle_patch": []}

    def attn1_patch(n, context, value, extra):
        seen["attn1_patch"].append((extra["block"], extra["block_index"]))
        assert torch.equal(context, n) and torch.equal(value, n)
        return n, context, value

    def attn1(q, k, v, extra):
        seen["attn1"].append((extra["block"], extra["n_heads"], extra["dim_head"]))
        return attention(q, k, v, extra["n_heads"])

    def middle(h, extra):
        seen["middle_patch"].append(extra["transformer_index"])
        return h

    keys = [("input", 3, 0), ("input", 5, 0), ("middle", 0, 0)] + [("output", i, 0) for i in range(4)]
    options = {"patches": {"attn1_patch": [attn1_patch], "middle_patch": [middle]},
               "patches_replace": {"attn1": {k: attn1 for k in keys}}}
    with torch.no_grad():
        plain, patched = call(unet, x), call(unet, x, options)
    assert torch.allclose(plain, patched, atol=1e-6)        # same attention through the replacement
    assert [b for b, _ in seen["attn1_patch"]] == [k[:2] for k in keys]
    assert [(b, h, d) for b, h, d in seen["attn1"]] == [(k[:2], 2, 16) for k in keys[:1]] + \
        [(k[:2], 2, 16) for k in keys[1:]]
    assert seen["middle_patch"] == list(range(len(keys)))
    # a replacement that changes the attention changes the output: it is really used
    options["patches_replace"]["attn1"][("middle", 0, 0)] = lambda q, k, v, extra: v * 2
    with torch.no_grad():
        assert not torch.allclose(call(unet, x, options), plain)


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ToyModel({"base": 16, "mult": (1, 2, 2), "attention_levels": (1, 2)})
    path = save_model(model, tmp_path / "m.safetensors", {"step": "3", "command": "test"}, dtype=torch.float32)
    loaded, meta = load_model(path)
    assert meta["step"] == "3" and meta["command"] == "test"
    x = torch.randn(2, 3, 32, 32)
    sigma = torch.tensor([1.0, 2.0])
    ctx = model.text(["a red circle", ""])
    with torch.no_grad():
        assert torch.equal(model.denoise(x, sigma, ctx), loaded.denoise(x, sigma, loaded.text(["a red circle", ""])))
    with pytest.raises(FileNotFoundError, match="train them"):
        load_model(tmp_path / "missing.safetensors")


def test_denoiser_uses_the_sd15_schedule():
    model = ToyModel({"base": 16, "mult": (1, 2, 2), "attention_levels": (1, 2)})
    assert torch.isclose(model.sigmas[0], torch.tensor(0.0292), atol=1e-4)
    assert torch.isclose(model.sigmas[-1], torch.tensor(14.6146), atol=1e-3)
    assert model.timestep(model.sigmas[[0, 10, 999]]).tolist() == [0, 10, 999]


def test_demo_writes_a_new_folder_each_time_and_checks_its_captions(tmp_path):
    from toyworld.edit_demo import new_folder, parse
    first, second = new_folder(tmp_path), new_folder(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert parse("a small blue square") == {"size": "small", "colour": "blue", "shape": "square"}
    with pytest.raises(ValueError, match="needs a colour"):
        parse("a large circle")


def test_demo_writes_under_the_projects_output_folder():
    """README: the main command's toy edit lands in output/toy_edit_<n>/ of this checkout."""
    from toyworld import edit_demo
    assert edit_demo.ROOT == Path(__file__).resolve().parents[2] and (edit_demo.ROOT / "scripts" / "main.sh").is_file()


def test_generation_noise_is_independent_per_frame_or_shared():
    from toyworld.pipeline import fresh_noise
    independent, shared = fresh_noise((4, 3, 8, 8), 7, "independent"), fresh_noise((4, 3, 8, 8), 7, "shared")
    assert not torch.equal(independent[0], independent[1])
    assert all(torch.equal(shared[0], frame) for frame in shared) and torch.equal(shared[0], independent[0])
    with pytest.raises(ValueError, match="unknown noise"):
        fresh_noise((4, 3, 8, 8), 7, "mixed")
