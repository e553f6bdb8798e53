"""3D-VRWKV blocks, the UNet layout and the output-block patch, on a miniature UNet with
ComfyUI's module layout and patch protocol (toyworld/unet.py: latent_unet)."""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from toyworld.unet import latent_unet
from vrwkv_editor.kernels import bi_wkv
from vrwkv_editor.vrwkv import blocks
from vrwkv_editor.vrwkv.blocks import VRWKVBlock3D
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.ddim import EDIT_KEY
from vrwkv_editor.vrwkv.layout import SkipPoint, block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch, frames_per_video


def make_patch(unet, placement="skip+mid", min_level=0):
    return VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(unet), BlockConfig(placement, min_level, channel_mix=2))))


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
    layout = unet_layout(latent_unet())
    assert layout.skips == (SkipPoint(0, 1, 16, 16), SkipPoint(1, 1, 16, 8),
                            SkipPoint(2, 0, 16, 8), SkipPoint(3, 0, 8, 8))
    assert (layout.mid_channels, layout.mid_level) == (16, 1)


def test_block_spec_options():
    layout = unet_layout(latent_unet())
    assert set(block_spec(layout, BlockConfig())["blocks"]) == {"mid", "skip_0", "skip_1", "skip_2", "skip_3"}
    assert set(block_spec(layout, BlockConfig("skip", 1))["blocks"]) == {"skip_0", "skip_1"}
    assert set(block_spec(layout, BlockConfig("mid"))["blocks"]) == {"mid"}
    with pytest.raises(ValueError, match="no block selected"):
        block_spec(layout, BlockConfig(min_level=3))
    with pytest.raises(ValueError, match="placement must be one of"):
        BlockConfig("everywhere")
    with pytest.raises(ValueError, match="not an SD1.5-style UNet"):
        unet_layout(torch.nn.Linear(2, 2))


def test_patch_callable_is_exact_identity_at_init():
    unet = latent_unet()
    patch = make_patch(unet)
    g = torch.Generator().manual_seed(0)
    for index, point in enumerate(unet_layout(unet).skips):
        size = 8 >> point.level
        h = torch.randn(6, point.h_channels, size, size, generator=g)
        hsp = torch.randn(6, point.skip_channels, size, size, generator=g)
        opts = {"block": ("output", index), "cond_or_uncond": [1, 0]}
        h2, hsp2 = patch(h, hsp, opts)
        assert (h2 - h).abs().max().item() == 0 and (hsp2 - hsp).abs().max().item() == 0


def test_blocks_start_the_same_whatever_the_global_random_state():
    """Two VRWKVBlocks of one layout, built after different global seeds, hold the same
    initial weights (a workflow tunes the same blocks each run), and building them leaves
    the global random stream where it was."""
    spec = block_spec(unet_layout(latent_unet()), BlockConfig(channel_mix=2))
    torch.manual_seed(1)
    first = VRWKVBlocks(spec).state_dict()
    after = torch.rand(1)
    torch.manual_seed(2)
    second = VRWKVBlocks(spec).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)


def test_patched_unet_equals_unpatched_at_init_and_differs_after_a_step():
    unet = latent_unet()
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
    unet = latent_unet()
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
    block = VRWKVBlock3D(8, config=BlockConfig(channel_mix=2))
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


# Error allowed in a block's contribution (output - input), relative to its largest value,
# against float64 on the same rounded inputs: about four units of the output dtype's
# precision (finfo.eps: 9.8e-4 float16, 7.8e-3 bfloat16), where y = x + delta is rounded
# to that dtype; measured 2.0e-3, 1.7e-2 and 3.7e-7 at most. The same bounds hold when the
# block computes in the half dtype itself (sample_in_unet_dtype): measured 2.7e-3 (float16)
# and 1.7e-2 (bfloat16) at 6 channels, 1.1e-3 and 1.1e-2 at 32.
CONTRIBUTION_RTOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5}


@pytest.mark.parametrize("in_unet_dtype", [False, True], ids=["block dtype", "unet dtype"])
@pytest.mark.parametrize("frames", [1, 2, 7])
@pytest.mark.parametrize("in_dtype,block_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.float32, torch.float32)])
def test_dtypes_and_frame_counts(frames, in_dtype, block_dtype, in_unet_dtype):
    """Half-precision features (and a bfloat16 block) give the float64 values within
    CONTRIBUTION_RTOL, in the input's dtype and shape; with half_precision_sampling an fp32
    block computes in the features' half dtype (without gradients), in its own otherwise."""
    torch.manual_seed(0)
    reference = VRWKVBlock3D(6, 4, BlockConfig(channel_mix=2, half_precision_sampling=in_unet_dtype))
    randomise_outputs(VRWKVPatch(torch.nn.ModuleDict({"b": reference})))
    block = copy.deepcopy(reference).to(block_dtype)
    reference.double()
    x = torch.randn(2 * frames, 6, 3, 5).to(in_dtype)
    gate = torch.randn(2 * frames, 4, 3, 5).to(in_dtype)
    computed = []
    block.spatial_mix.register_forward_hook(lambda module, args, out: computed.append(out.dtype))
    with torch.no_grad():
        y = block(x, frames, gate=gate)
        expected = reference(x.double(), frames, gate=gate.double()) - x.double()
    assert y.dtype == in_dtype and y.shape == x.shape
    assert computed == [in_dtype if in_unet_dtype else block_dtype]
    error = ((y.double() - x.double()) - expected).abs().max() / expected.abs().max()
    assert error <= CONTRIBUTION_RTOL[in_dtype], error
    block(x, frames, gate=gate).sum()                     # with gradients: the block's own dtype
    assert computed[-1] == block_dtype


def test_half_precision_copy_follows_tuning():
    """The cast parameters are refreshed after an optimiser step changes the block."""
    torch.manual_seed(0)
    block = VRWKVBlock3D(6, config=BlockConfig(channel_mix=2, half_precision_sampling=True))
    randomise_outputs(VRWKVPatch(torch.nn.ModuleDict({"b": block})))
    x = torch.randn(4, 6, 3, 3)
    with torch.no_grad():
        before = block(x.half(), 2)
    block(x, 2).square().sum().backward()
    torch.optim.SGD(block.parameters(), lr=0.5).step()
    with torch.no_grad():
        after, fp32 = block(x.half(), 2), block(x, 2)
    assert not torch.equal(before, after)
    assert torch.allclose(after.float(), fp32, atol=1e-2 * fp32.abs().max())



def test_half_precision_sampling_under_inference_mode_follows_loaded_weights():
    """As ComfyUI runs it: blocks built by VRWKV Patch Model under torch.inference_mode, then
    sampled (also under inference mode) with half-precision features, before and after
    loading other weights there. Each half-precision call equals the float32 one (within
    float16's rounding), so the half copy follows the load, and the copy is kept between calls."""
    unet = latent_unet()
    with torch.inference_mode():
        patch = make_patch(unet, placement="mid")
    patch.blocks.blocks["mid"].sample_in_unet_dtype = True
    block = patch.blocks.blocks["mid"]
    x = torch.randn(6, 16, 4, 4)
    states = []
    for seed in (1, 2):
        tuned = make_patch(unet, placement="mid")
        randomise_outputs(tuned, seed)
        states.append(tuned.blocks.state_dict())
    for state in states:
        with torch.inference_mode():
            patch.blocks.load_state_dict(state)
            half, full = block(x.half(), 3).float(), block(x, 3)
        assert (full - x).abs().max() > 0.1                    # the loaded weights act
        assert torch.allclose(half, full, atol=1e-2 * full.abs().max())
        assert block.cast.cast                                 # kept for the next call


def test_moving_the_blocks_frees_their_half_precision_copy():
    """ModelPatcher moves the patch to the offload device (patch.to): the half copy made for
    sampling goes with the old storage instead of staying on the GPU."""
    import gc
    import weakref
    torch.manual_seed(0)
    block = VRWKVBlock3D(6, config=BlockConfig(channel_mix=2, half_precision_sampling=True))
    patch = VRWKVPatch(torch.nn.ModuleDict({"b": block}))
    with torch.no_grad():
        block(torch.randn(4, 6, 3, 3).half(), 2)
    copies = [weakref.ref(t) for t in block.cast.cast.values()]
    assert copies and all(ref() is not None for ref in copies)
    patch.to("meta")
    gc.collect()
    assert all(ref() is None for ref in copies)


def test_decay_per_token_is_exact_with_half_precision_sampling(monkeypatch):
    """16 frames of 64x64 latents are 65,536 tokens: decay 0.05 / 65,536 is below float16's
    normal range (1.6% off there). The decay and bonus reaching Bi-WKV from a half-precision
    call are those of the float32 parameters."""
    torch.manual_seed(0)
    block = VRWKVBlock3D(2, config=BlockConfig(channel_mix=0, half_precision_sampling=True))
    with torch.no_grad():
        block.spatial_mix.decay.fill_(0.05)
        block.spatial_mix.first.fill_(0.07)
    seen = []
    monkeypatch.setattr(blocks, "bi_wkv", lambda w, u, k, v: seen.append((w, u)) or v)
    with torch.no_grad():
        block(torch.randn(16, 2, 64, 64).half(), 16)
    w, u = seen[0]
    assert torch.allclose(w.double(), torch.full((2,), 0.05 / 65536, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(u.double(), torch.full((2,), 0.07 / 65536, dtype=torch.float64), rtol=1e-6)

# Block options (vrwkv.config.BlockConfig), alone and together.
LEAN = {
    "no channel mix": {"channel_mix": 0},
    "channel mix 1x": {"channel_mix": 1},
    "low rank": {"rank": 0.25},
    "fused mix": {"fused_rkv": True},
    "merge skip fusion": {"skip_fusion": "merge"},
    "unet dtype": {"half_precision_sampling": True},
    "channel mix at level 0 only": {"channel_mix_max_level": 0},
    "channel mix repeating frame 0": {"channel_mix_pad": "repeat"},
    "all": {"channel_mix": 0, "rank": 0.5, "fused_rkv": True, "skip_fusion": "merge"},
}


@pytest.mark.parametrize("options", LEAN.values(), ids=LEAN)
def test_lean_options_are_an_exact_identity_at_init_and_train(options):
    unet = latent_unet()
    x, t, context, opts = unet_inputs()
    with torch.no_grad():
        ref = unet(x, t, context, opts)
    torch.manual_seed(0)
    patch = VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(unet), BlockConfig(**{"channel_mix": 2, **options}))))
    opts["patches"] = {"output_block_patch": [patch]}
    out = unet(x, t, context, opts)
    assert torch.equal(out, ref)
    opt = torch.optim.SGD(patch.blocks.parameters(), lr=0.1)
    for _ in range(2):      # the first step moves the zero-initialised outputs, the second all the rest
        opt.zero_grad()
        (unet(x, t, context, opts) - ref.flip(0)).square().mean().backward()
        opt.step()
    still = [n for n, p in patch.blocks.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not still, still
    with torch.no_grad():
        assert not torch.equal(unet(x, t, context, opts), ref)


def test_lean_options_build_what_they_name():
    layout = unet_layout(latent_unet())

    def blocks(**options):
        return VRWKVBlocks(block_spec(layout, BlockConfig(**{"channel_mix": 2, **options}))).blocks

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert all(b.channel_mix is None for b in blocks(channel_mix=0).values())
    levels = {name: b["level"] for name, b in block_spec(layout, BlockConfig())["blocks"].items()}
    assert {levels[n] for n, b in blocks(channel_mix_max_level=0).items() if b.channel_mix is not None} == {0}
    assert {levels[n] for n, b in blocks(channel_mix_max_level=0).items() if b.channel_mix is None} == {1}
    assert count(blocks(channel_mix=1)["mid"].channel_mix.key) == 16 * 16
    full, low = blocks()["mid"].spatial_mix, blocks(rank=0.25)["mid"].spatial_mix
    assert count(low.key.proj) == 2 * 16 * 4 and count(full.key.proj) == 16 * 16
    assert count(low.output) == 2 * 16 * 4
    merged = blocks(skip_fusion="merge")
    assert merged["skip_1"].spatial_mix.key.proj.in_features == 8 + 16       # skip + decoder channels
    assert merged["mid"].spatial_mix.key.proj.in_features == 16              # the mid block has no gate
    with pytest.raises(ValueError, match="skip_fusion must be one of"):
        BlockConfig(skip_fusion="concat")
    with pytest.raises(ValueError, match=r"rank must be in \(0, 1\]"):
        BlockConfig(rank=2)
    with pytest.raises(ValueError, match="channel_mix must be >= 0"):
        BlockConfig(channel_mix=-1)


def test_channel_mix_pad_reads_frame_0_as_its_own_past_where_asked():
    """"repeat" computes frame 0 as after a still frame (the clip with frame 0 twice) and every
    other frame as zero padding does; "repeat-edits" does so in edits only. Fails if the pad
    were ignored, applied to every frame, or applied outside edits."""
    g = torch.Generator().manual_seed(0)
    mixes = {pad: blocks.ChannelMix3D(6, 2, pad) for pad in ("zero", "repeat", "repeat-edits")}
    with torch.no_grad():
        for p in mixes["zero"].parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for mix in mixes.values():
            mix.load_state_dict(mixes["zero"].state_dict())
        x = torch.randn(2, 4, 3, 3, 6, generator=g)
        still = mixes["zero"](torch.cat([x[:, :1], x], 1))[:, 1:]
        zero = mixes["zero"](x)
        assert torch.allclose(mixes["repeat"](x), still, atol=1e-6)
        assert torch.equal(still[:, 1:], zero[:, 1:]) and not torch.allclose(still[:, 0], zero[:, 0])
        assert torch.equal(mixes["repeat-edits"](x), zero) and torch.equal(mixes["zero"](x, edit=True), zero)
        assert torch.equal(mixes["repeat-edits"](x, edit=True), mixes["repeat"](x))


def test_the_patch_tells_the_blocks_an_edit():
    """ddim.EDIT_KEY in the transformer options reaches the channel mixes: with "repeat-edits"
    a patched UNet's output changes (from frame 0 of each video on), with "zero" it does not."""
    unet = latent_unet()
    x, t, context, opts = unet_inputs()
    out = {}
    for pad in ("zero", "repeat-edits"):
        patch = VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(unet), BlockConfig(channel_mix=2, channel_mix_pad=pad))))
        randomise_outputs(patch)
        with torch.no_grad():
            for name, p in patch.blocks.named_parameters():
                if name.endswith("mu_k"):
                    p.fill_(0.5)
            for edit in (False, True):
                options = {**opts, "patches": {"output_block_patch": [patch]}, **({EDIT_KEY: True} if edit else {})}
                out[pad, edit] = unet(x, t, context, options).unflatten(0, (2, 3))
    assert torch.equal(out["zero", False], out["zero", True])
    assert torch.equal(out["zero", False], out["repeat-edits", False])
    assert not torch.allclose(out["repeat-edits", True][:, 0], out["repeat-edits", False][:, 0])


@pytest.mark.parametrize("skip_fusion", ["gate", "merge"])
def test_merge_feeds_the_decoder_feature_into_the_bi_wkv(skip_fusion):
    """With "merge" the keys and values (what Bi-WKV mixes) depend on the decoder feature;
    with "gate" only the receptance does."""
    torch.manual_seed(0)
    mix = VRWKVBlock3D(8, 4, BlockConfig(channel_mix=0, skip_fusion=skip_fusion)).spatial_mix
    x, g = torch.randn(1, 2, 3, 3, 8), torch.randn(1, 2, 3, 3, 4)
    with torch.no_grad():
        r, k, v = mix.receptance_key_value(x, g)
        r2, k2, v2 = mix.receptance_key_value(x, g + 1)
    assert not torch.equal(r, r2)
    assert torch.equal(k, k2) == torch.equal(v, v2) == (skip_fusion == "gate")


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("gate_channels", [None, 4])
def test_fused_mix_is_one_pass(gate_channels):
    """Fused: one depthwise convolution and one projection matmul per input feature (one for
    the mid block, two for a skip block) for r, k and v; unfused: three of each."""
    def ops(fused):
        torch.manual_seed(0)
        mix = VRWKVBlock3D(8, gate_channels, BlockConfig(channel_mix=0, fused_rkv=fused)).spatial_mix
        x = torch.randn(1, 2, 3, 3, 8)
        g = x if gate_channels is None else torch.randn(1, 2, 3, 3, gate_channels)
        with torch.no_grad(), OpCount() as counted:
            mix.receptance_key_value(x, g)
        return counted.ops.count("convolution"), sum(counted.ops.count(m) for m in ("mm", "bmm", "addmm"))

    assert ops(False) == (3, 3)
    assert ops(True) == (1, 1 if gate_channels is None else 2)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    block = VRWKVBlock3D(6, config=BlockConfig(channel_mix=2))
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


class ElementTraffic(TorchDispatchMode):
    """Counts the elements every aten op reads and writes: a lower bound on the work of
    elementwise ops, reductions and scans, which a FLOP counter (matmuls, convolutions) misses."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.elements += sum(t.numel() for t in tensors)
        return out


def block_work(frames):
    """(FLOPs of matmuls and convolutions, elements read and written by every op) of one
    forward of a block over `frames` frames of 8x8."""
    torch.manual_seed(0)
    block = VRWKVBlock3D(16, 8, BlockConfig(channel_mix=2))
    x, gate = torch.randn(frames, 16, 8, 8), torch.randn(frames, 8, 8, 8)
    flops, traffic = FlopCounterMode(display=False), ElementTraffic()
    with torch.no_grad():
        with flops:
            block(x, frames, gate=gate)
        with traffic:
            block(x, frames, gate=gate)
    return flops.get_total_flops(), traffic.elements


def test_block_work_grows_linearly_with_frames(monkeypatch):
    """From 8 to 32 frames every measure of a block's work, Bi-WKV's own scans included, grows
    4x (at most 4.2x); the same measure sees the dense O(L^2) oracle grow ~16x (at least 10x)."""
    (flops8, elements8), (flops32, elements32) = block_work(8), block_work(32)
    assert flops32 == 4 * flops8 > 0
    assert elements32 <= 4.2 * elements8, elements32 / elements8
    monkeypatch.setattr(blocks, "bi_wkv", lambda w, u, k, v: bi_wkv(w, u, k, v, backend="naive"))
    (_, dense8), (_, dense32) = block_work(8), block_work(32)
    assert dense32 >= 10 * dense8, dense32 / dense8
