"""Long clips in windows: the window schedule and its blending, the fixed decay
normalisation, the Bi-WKV carry inside a block and through a whole UNet
(toyworld/unet.py: latent_unet) via the context-window wrapper."""

import pytest
import torch

from test_blocks import make_patch, randomise_outputs, unet_inputs
from toyworld.unet import latent_unet
from vrwkv_editor.vrwkv.blocks import VRWKVBlock3D
from vrwkv_editor.vrwkv.carry import FrameCarry
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch
from vrwkv_editor.vrwkv.weights import load_weights, save_weights
from vrwkv_editor.vrwkv.windows import ContextWindows, blend_weights, frame_windows


@pytest.mark.parametrize("frames,length,overlap", [(240, 16, 4), (17, 8, 0), (10, 4, 3), (9, 9, 2), (5, 0, 0)])
def test_windows_cover_the_clip_and_blend_to_one(frames, length, overlap):
    windows = frame_windows(frames, length, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == frames
    assert all(e - s == min(length or frames, frames) for s, e in windows)
    assert all(s_next <= e - overlap for (_, e), (s_next, _) in zip(windows, windows[1:]))
    total = torch.zeros(frames)
    for (s, e), weight in zip(windows, blend_weights(windows, frames)):
        total[s:e] += weight
        assert (weight > 0).all()
    assert torch.allclose(total, torch.ones(frames))


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="less than the window length"):
        frame_windows(20, 8, 8)
    with pytest.raises(ValueError, match="less than the window length"):
        ContextWindows(8, 9, carry=True)


def tuned_block(channels=8, seed=0, norm_frames=None, **options):
    torch.manual_seed(seed)
    block = VRWKVBlock3D(channels, 6, BlockConfig(**{"channel_mix": 2, **options}))
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(("decay", "first")) or ".mu" in name or name.startswith("channel_mix.mu"):
                p.copy_(torch.rand(p.shape) * 2)
            elif name.startswith("spatial_mix.output") or name == "channel_mix.value.weight":
                p.copy_(torch.randn(p.shape) * 0.3)
    block.spatial_mix.norm_frames = norm_frames
    return block


# The block options (vrwkv/config.BlockConfig) each carry their own token shifts.
LEAN = {"the paper's block": ({}, {"x", "gate", "channel_mix"}),
        "fused mix": ({"fused_rkv": True}, {"rkv", "channel_mix"}),
        "merge fusion, low rank": ({"skip_fusion": "merge", "rank": 0.5}, {"x", "gate", "channel_mix"}),
        "no channel mix": ({"channel_mix": 0}, {"x", "gate"}),
        "channel mix repeating frame 0": ({"channel_mix_pad": "repeat"}, {"x", "gate", "channel_mix"})}


@pytest.mark.parametrize("lean", LEAN, ids=list(LEAN))
def test_block_windows_with_exact_carry_equal_the_whole_clip(lean):
    """A tuned block (decay normalised by 4 frames) on an 8-frame clip equals the block on
    frames [0, 4) and [4, 8) with exact carry: the future of [4, 8) first (nothing after it),
    then [0, 4) with it, then [4, 8) with the past and the frame before it. Fails if the
    decay were normalised by each call's own length, or if any carry were dropped.
    ([4, 8)'s k and v read frame 3 through the token shift: a first pass of [0, 4) without
    its future gives that frame exactly.)"""
    options, shifted = LEAN[lean]
    block = tuned_block(norm_frames=4, **options)
    g = torch.Generator().manual_seed(1)
    x, gate = torch.randn(2 * 8, 8, 3, 3, generator=g), torch.randn(2 * 8, 6, 3, 3, generator=g)
    first = torch.arange(2)[:, None] * 8 + torch.arange(4)
    second = first + 4
    with torch.no_grad():
        whole = block(x, 8, gate)
        draft = FrameCarry(next_start=4)
        block(x[first.flatten()], 4, gate[first.flatten()], carry=draft)
        last = FrameCarry(prev=draft.out_prev, prev_end=0)
        block(x[second.flatten()], 4, gate[second.flatten()], carry=last)
        head = FrameCarry(future=last.out_future, next_start=4)
        y_first = block(x[first.flatten()], 4, gate[first.flatten()], carry=head)
        tail = FrameCarry(past=head.out_past, prev=head.out_prev)
        y_second = block(x[second.flatten()], 4, gate[second.flatten()], carry=tail)
    assert set(head.out_prev) == shifted
    assert torch.allclose(y_first, whole[first.flatten()], atol=1e-5)
    assert torch.allclose(y_second, whole[second.flatten()], atol=1e-5)
    with torch.no_grad():
        alone = block(x[second.flatten()], 4, gate[second.flatten()])
    assert not torch.allclose(alone, whole[second.flatten()], atol=1e-3)


def test_norm_frames_is_saved_with_the_weights(tmp_path):
    unet = latent_unet()
    patch = make_patch(unet)
    untuned = save_weights(tmp_path / "untuned", patch.blocks.state_dict(), patch.blocks.spec)
    spec, state, _, _ = load_weights(untuned)
    assert "norm_frames" not in spec                                  # nothing recorded: each call's own
    assert {m.norm_frames for m in VRWKVBlocks(spec).modules() if hasattr(m, "norm_frames")} == {None}
    patch.blocks.set_norm_frames(6)
    spec, state, _, _ = load_weights(save_weights(tmp_path / "new", patch.blocks.state_dict(), patch.blocks.spec,
                                                  info={"frames": 24, "window": 0}))
    rebuilt = VRWKVBlocks(spec)
    assert rebuilt.spec["norm_frames"] == 6
    assert {m.norm_frames for m in rebuilt.modules() if hasattr(m, "norm_frames")} == {6}


@pytest.mark.parametrize("window,expected", [(0, 10), (4, 4), (10, 10), (16, 10)])
def test_files_from_before_norm_frames_use_the_length_they_were_tuned_on(tmp_path, window, expected):
    """A file tuned before norm_frames was recorded divides the decay by the frames of each
    tuning step: its window, or all frames (info "frames", "window")."""
    unet, patch = tuned_unet(None)
    path = save_weights(tmp_path / "old", patch.blocks.state_dict(), patch.blocks.spec,
                        info={"frames": 10, "window": window})
    spec, _, _, _ = load_weights(path)
    assert {m.norm_frames for m in VRWKVBlocks(spec).modules() if hasattr(m, "norm_frames")} == {expected}


def test_an_old_file_tuned_on_the_whole_clip_samples_it_in_windows_as_whole(tmp_path):
    """Such a file (tuned on all 10 frames), sampled in windows of 5 with carry, reaches its
    whole-clip output: each window divides the decay by 10 frames, not by its own 5."""
    unet, patch = tuned_unet(None)
    path = save_weights(tmp_path / "old", patch.blocks.state_dict(), patch.blocks.spec, info={"frames": 10, "window": 0})
    spec, state, _, _ = load_weights(path)
    blocks = VRWKVBlocks(spec)
    blocks.load_state_dict(state)
    x, t, context, opts = unet_inputs(videos=1, frames=10)
    opts["patches"] = {"output_block_patch": [VRWKVPatch(blocks)]}
    with torch.no_grad():
        whole = unet(x, t, context, dict(opts))
    wrapper = ContextWindows(5, 2, carry=True)
    errors = [(windowed(wrapper, unet, x, t, context, opts) - whole).abs().max().item() for _ in range(8)]
    assert errors[-1] < 1e-5


def apply_model(unet):
    return lambda x, t, c_crossattn, transformer_options: unet(x, t, c_crossattn, transformer_options)


def windowed(wrapper, unet, x, t, context, opts):
    args = {"input": x, "timestep": t, "cond_or_uncond": opts["cond_or_uncond"],
            "c": {"c_crossattn": context, "transformer_options": dict(opts)}}
    with torch.no_grad():
        return wrapper(apply_model(unet), args)


def tuned_unet(norm_frames):
    unet = latent_unet()
    patch = make_patch(unet)
    randomise_outputs(patch)
    with torch.no_grad():                 # token shift in use: the frame before a window matters
        for name, p in patch.blocks.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("mu"):
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(2)))
    patch.blocks.set_norm_frames(norm_frames)
    return unet, patch


def test_a_window_alone_equals_that_window_of_a_longer_clip_without_carry():
    """The length test of issue 11: a tuned model (decay fixed at its tuning window, 4 frames)
    gives a window the same output alone as inside a 12-frame clip run in windows of 4
    without carry (nothing crosses the empty boundaries)."""
    unet, patch = tuned_unet(4)
    x, t, context, opts = unet_inputs(videos=2, frames=12)
    opts["patches"] = {"output_block_patch": [patch]}
    long = windowed(ContextWindows(4, 0, carry=False), unet, x, t, context, opts)
    index = (torch.arange(2)[:, None] * 12 + torch.arange(4, 8)).flatten()
    with torch.no_grad():
        alone = unet(x[index], t[index], context[index], dict(opts))
    assert torch.allclose(long[index], alone, atol=1e-6)


@pytest.mark.parametrize("overlap", [0, 2])
def test_carry_converges_to_the_whole_clip(overlap):
    """With carry, the past is exact within a call and the future is one call stale: calls
    repeated on the same input reach the whole-clip output (each call makes one more block
    exact). Per-frame prompts are sliced with their frames. Without carry windows differ."""
    unet, patch = tuned_unet(6)
    x, t, context, opts = unet_inputs(videos=2, frames=10)
    opts["patches"] = {"output_block_patch": [patch]}
    with torch.no_grad():
        whole = unet(x, t, context, dict(opts))
    wrapper = ContextWindows(5, overlap, carry=True)
    errors = [(windowed(wrapper, unet, x, t, context, opts) - whole).abs().max().item() for _ in range(8)]
    assert errors[-1] < 1e-5 < errors[0]
    plain = windowed(ContextWindows(5, overlap, carry=False), unet, x, t, context, opts)
    assert (plain - whole).abs().max().item() > 1e-3
    fresh = ContextWindows(5, overlap, carry=True)                   # a new one starts with no states
    assert (windowed(fresh, unet, x, t, context, opts) - whole).abs().max().item() == pytest.approx(errors[0])


def test_wrapper_passes_through_under_autograd_and_for_short_clips():
    unet, patch = tuned_unet(4)
    x, t, context, opts = unet_inputs(videos=1, frames=4)
    opts["patches"] = {"output_block_patch": [patch]}
    calls = []

    def counting(x, t, c_crossattn, transformer_options):
        calls.append(x.shape[0])
        return unet(x, t, c_crossattn, transformer_options)

    args = {"input": x, "timestep": t, "cond_or_uncond": [0],
            "c": {"c_crossattn": context, "transformer_options": dict(opts)}}
    ContextWindows(4, 1, carry=True)(counting, args)                 # clip no longer than a window
    x8, t8, c8, _ = unet_inputs(videos=1, frames=8)
    ContextWindows(4, 1, carry=True)(counting, {**args, "input": x8, "timestep": t8,
                                                 "c": {"c_crossattn": c8, "transformer_options": dict(opts)}})
    assert calls == [4, 8]


def test_every_per_frame_input_is_cut_to_the_window():
    """Prompt embeddings, ControlNet-style nested residuals and the sigmas reach each window
    cut to its frames. With CFG, ComfyUI's transformer_options["sigmas"] holds one sigma per
    frame (the sampler's sigma for x, before cond and uncond are batched); the sampler's
    schedule (sample_sigmas, here as long as the batch: core's context windows mistook it for
    a per-frame tensor) stays whole."""
    x, t, context, _ = unet_inputs(videos=2, frames=6)
    seen = []

    def record(x, t, c_crossattn, control, transformer_options):
        seen.append((c_crossattn[:, 0, 0], control["output"][0][:, 0], transformer_options["sigmas"],
                     transformer_options["sample_sigmas"]))
        return x

    frame_id = torch.arange(12.0)
    args = {"input": x, "timestep": t, "cond_or_uncond": [1, 0],
            "c": {"c_crossattn": frame_id[:, None, None].expand(12, 2, 3), "control": {"output": [frame_id[:, None]]},
                  "transformer_options": {"sigmas": torch.arange(6.0), "sample_sigmas": torch.arange(12.0)}}}
    with torch.no_grad():
        out = ContextWindows(4, 2, carry=False)(record, args)
    assert torch.allclose(out, x, atol=1e-6)                    # identity windows blend back to the input
    expected = [[0, 1, 2, 3, 6, 7, 8, 9], [2, 3, 4, 5, 8, 9, 10, 11]]
    assert [s[0].tolist() for s in seen] == expected
    assert all(torch.equal(a, b) for a, b, _, _ in seen)
    assert [s[2].tolist() for s in seen] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert all(len(s[3]) == 12 for s in seen)


def test_apply_model_wrapper_windows_what_comfyui_passes():
    """As an APPLY_MODEL wrapper (ComfyUI calls it with the executor and apply_model's own
    arguments, positionally) the windows cut x, the sigmas and every per-item input, pass
    the rest on, and give what the UNet function wrapper form gives."""
    x, t, context, _ = unet_inputs(videos=2, frames=6)
    calls = []

    def executor(x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, y=None):
        calls.append((x.shape[0], c_concat, y[:, 0].tolist(), transformer_options["cond_or_uncond"]))
        return x * 2 + y[:, :1, None, None]

    y = torch.arange(12.0)[:, None].expand(12, 3)
    options = {"cond_or_uncond": [1, 0], "sigmas": t[:6]}
    windows = ContextWindows(4, 2, carry=False)
    with torch.no_grad():
        out = windows.apply_model_wrapper(executor, x, t, None, context, None, options, y=y)
        same = windows(lambda x, t, **c: executor(x, t, **c), {
            "input": x, "timestep": t, "cond_or_uncond": [1, 0],
            "c": {"c_concat": None, "c_crossattn": context, "control": None, "transformer_options": options, "y": y}})
    assert torch.allclose(out, x * 2 + y[:, :1, None, None], atol=1e-6) and torch.equal(out, same)
    assert [c[0] for c in calls] == [8, 8, 8, 8] and all(c[1] is None and c[3] == [1, 0] for c in calls)
    assert calls[0][2] == [0, 1, 2, 3, 6, 7, 8, 9]


def interleaved_errors(uuids, rounds=8):
    """Two prompts of one kind (cond_or_uncond [0] each, ComfyUI's separate calls for two
    positives with different areas, masks or ControlNets) run in turn through one wrapper,
    10 frames in windows of 5 overlapping by 2: each prompt's error against its whole-clip
    output after every round."""
    unet, patch = tuned_unet(6)
    wrapper = ContextWindows(5, 2, carry=True)
    prompts = []
    for seed, uuid in zip((0, 1), uuids):
        x, t, context, opts = unet_inputs(videos=1, frames=10, seed=seed)
        opts["patches"] = {"output_block_patch": [patch]}
        opts["uuids"] = [uuid]
        with torch.no_grad():
            whole = unet(x, t, context, dict(opts))
        prompts.append((x, t, context, opts, whole))
    errors = []
    for _ in range(rounds):
        errors.append([(windowed(wrapper, unet, x, t, context, opts) - whole).abs().max().item()
                       for x, t, context, opts, whole in prompts])
    return errors


def test_two_prompts_of_one_kind_keep_their_own_states():
    """Each prompt converges to its whole-clip output as it does alone: the states are kept
    per conditioning (transformer_options["uuids"]), not per cond/uncond kind and shape."""
    errors = interleaved_errors(["a", "b"])
    assert max(errors[-1]) < 1e-5 < min(errors[0])


def test_a_sampling_run_starts_and_ends_with_an_empty_store():
    """VRWKV Context Windows registers ContextWindows.sampling_run as ComfyUI's outer-sample
    wrapper: a run (here two steps with the same sigmas tensor, as a cached SIGMAS gives
    every run) starts without the states of the run before, whatever its sigmas, and leaves
    none behind, also when it is interrupted."""
    unet, patch = tuned_unet(6)
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    x, t, context, opts = unet_inputs(videos=1, frames=10)
    opts.update(patches={"output_block_patch": [patch]}, sample_sigmas=sigmas)
    wrapper = ContextWindows(5, 2, carry=True)

    def steps(x, count):
        return [windowed(wrapper, unet, x, t, context, opts) for _ in range(count)]

    first = wrapper.sampling_run(lambda: steps(x, 2))
    x2 = unet_inputs(videos=1, frames=10, seed=5)[0]
    second = wrapper.sampling_run(lambda: steps(x2, 2))
    fresh = windowed(ContextWindows(5, 2, carry=True), unet, x2, t, context, opts)
    assert torch.equal(second[0], fresh) and not torch.equal(second[0], first[0])
    assert wrapper.store.empty()

    def interrupted():
        steps(x, 1)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        wrapper.sampling_run(interrupted)
    assert wrapper.store.empty()


def test_an_interrupted_call_releases_its_states():
    """Interrupting a windowed call (ComfyUI raises from inside the model) drops the states
    and frame copies it had made for its later windows."""
    unet, patch = tuned_unet(6)
    x, t, context, opts = unet_inputs(videos=1, frames=12)
    opts["patches"] = {"output_block_patch": [patch]}
    wrapper = ContextWindows(4, 1, carry=True)
    calls = []

    def stop_at_third_window(x, t, c_crossattn, transformer_options):
        calls.append(x.shape[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return unet(x, t, c_crossattn, transformer_options)

    args = {"input": x, "timestep": t, "cond_or_uncond": [0],
            "c": {"c_crossattn": context, "transformer_options": dict(opts)}}
    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        wrapper(stop_at_third_window, args)
    assert wrapper.store.empty()
