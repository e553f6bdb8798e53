"""3D-VRWKV blocks, the UNet layout and the output-block patch, on a miniature UNet with
ComfyUI's module layout and patch protocol (tests/tiny_unet.py)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tiny_unet import TinyUNet
from vrwkv_editor.vrwkv.blocks import VRWKVBlock3D
from vrwkv_editor.vrwkv.layout import SkipPoint, block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch, frames_per_video


def make_patch(unet, placement="skip+mid", min_level=0, seed=0):
    torch.manual_seed(seed)
    return VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(unet), placement, min_level, hidden_ratio=2)))


def randomise_outputs(patch, seed=1):
    """Give the zero-initialised output projections values, as tuning would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in patch.blocks.named_parameters():
            if name.endswith("spatial_mix.output.weight") or name.endswith("channel_mix.value.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def unet_inputs(videos=2, frames=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(videos * frames, 4, size, size, generator=g)
    t = torch.full((videos * frames,), 500.0)
    context = torch.randn(videos * frames, 5, 12, generator=g)
    opts = {"cond_or_uncond": list(range(videos)), "patches": {}}
    return x, t, context, opts


def test_layout_of_comfy_style_unet():
    layout = unet_layout(TinyUNet(c=8))
    assert layout.skips == (SkipPoint(0, 1, 16, 16), SkipPoint(1, 1, 16, 8),
                            SkipPoint(2, 0, 16, 8), SkipPoint(3, 0, 8, 8))
    assert (layout.mid_channels, layout.mid_level) == (16, 1)


def test_block_spec_options():
    layout = unet_layout(TinyUNet(c=8))
    assert set(block_spec(layout, "skip+mid", 0)["blocks"]) == {"mid", "skip_0", "skip_1", "skip_2", "skip_3"}
    assert set(block_spec(layout, "skip", 1)["blocks"]) == {"skip_0", "skip_1"}
    assert set(block_spec(layout, "mid", 0)["blocks"]) == {"mid"}
    with pytest.raises(ValueError, match="no block selected"):
        block_spec(layout, "skip+mid", 3)
    with pytest.raises(ValueError, match="placement must be one of"):
        block_spec(layout, "everywhere", 0)
    with pytest.raises(ValueError, match="not an SD1.5-style UNet"):
        unet_layout(torch.nn.Linear(2, 2))


def test_patch_callable_is_exact_identity_at_init():
    unet = TinyUNet()
    patch = make_patch(unet)
    g = torch.Generator().manual_seed(0)
    for index, point in enumerate(unet_layout(unet).skips):
        size = 8 >> point.level
        h = torch.randn(6, point.h_channels, size, size, generator=g)
        hsp = torch.randn(6, point.skip_channels, size, size, generator=g)
        opts = {"block": ("output", index), "cond_or_uncond": [1, 0]}
        h2, hsp2 = patch(h, hsp, opts)
        assert (h2 - h).abs().max().item() == 0 and (hsp2 - hsp).abs().max().item() == 0


def test_patched_unet_equals_unpatched_at_init_and_differs_after_a_step():
    unet = TinyUNet()
    x, t, context, opts = unet_inputs()
    with torch.no_grad():
        ref = unet(x, t, context, opts)
    patch = make_patch(unet)
    opts["patches"] = {"output_block_patch": [patch]}
    out = unet(x, t, context, opts)
    assert torch.equal(out, ref)
    opt = torch.optim.SGD(patch.blocks.parameters(), lr=0.1)
    (out - torch.randn_like(out)).square().mean().backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(unet(x, t, context, opts), ref)


def test_cfg_batch_keeps_videos_apart():
    """With two videos in the batch (uncond, cond) each is mixed only with itself."""
    unet = TinyUNet()
    patch = make_patch(unet)
    randomise_outputs(patch)
    x, t, context, opts = unet_inputs(videos=2, frames=3)
    opts["patches"] = {"output_block_patch": [patch]}
    with torch.no_grad():
        both = unet(x, t, context, opts)
        one = {"cond_or_uncond": [0], "patches": opts["patches"]}
        first = unet(x[:3], t[:3], context[:3], one)
        second = unet(x[3:], t[3:], context[3:], one)
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-5)


def test_every_frame_sees_the_whole_clip():
    """Tokens of all frames form one bidirectional sequence: changing the first frame
    changes the last frame's output and vice versa."""
    torch.manual_seed(0)
    block = VRWKVBlock3D(8, hidden_ratio=2)
    randomise_outputs(VRWKVPatch(torch.nn.ModuleDict({"b": block})))
    x = torch.randn(5, 8, 4, 4)
    first, last = x.clone(), x.clone()
    first[0] += torch.randn(8, 4, 4)
    last[4] += torch.randn(8, 4, 4)
    with torch.no_grad():
        y = block(x, 5)
        assert not torch.allclose(y[4], block(first, 5)[4])
        assert not torch.allclose(y[0], block(last, 5)[0])


def test_frames_per_video():
    assert frames_per_video(16, {"cond_or_uncond": [1, 0]}) == 8
    assert frames_per_video(8, {}) == 8
    with pytest.raises(ValueError, match="does not split into 2 videos"):
        frames_per_video(9, {"cond_or_uncond": [1, 0]})


@pytest.mark.parametrize("frames", [1, 2, 7])
@pytest.mark.parametrize("in_dtype,block_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.float32, torch.float32)])
def test_dtypes_and_frame_counts(frames, in_dtype, block_dtype):
    torch.manual_seed(0)
    block = VRWKVBlock3D(6, gate_channels=4, hidden_ratio=2).to(block_dtype)
    randomise_outputs(VRWKVPatch(torch.nn.ModuleDict({"b": block})))
    x = torch.randn(2 * frames, 6, 3, 5).to(in_dtype)
    gate = torch.randn(2 * frames, 4, 3, 5).to(in_dtype)
    y = block(x, frames, gate=gate)
    assert y.dtype == in_dtype and y.shape == x.shape and torch.isfinite(y.float()).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    block = VRWKVBlock3D(6, hidden_ratio=2)
    randomise_outputs(VRWKVPatch(torch.nn.ModuleDict({"b": block})))
    x = torch.randn(6, 6, 4, 4)
    grads = []
    for ckpt in (False, True):
        block.gradient_checkpointing = ckpt
        block.zero_grad()
        block(x, 3).square().sum().backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_block_work_grows_linearly_with_frames():
    """Counted FLOPs of every matmul/conv in a block are proportional to the frame count:
    no quadratic attention hides in it (Bi-WKV itself is O(L) by construction)."""
    block = VRWKVBlock3D(16, gate_channels=8, hidden_ratio=2)

    def flops(frames):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            block(torch.randn(frames, 16, 8, 8), frames, gate=torch.randn(frames, 8, 8, 8))
        return counter.get_total_flops()

    assert flops(32) == 4 * flops(8) > 0
