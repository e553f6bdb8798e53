"""The Tune-A-Video baseline (baselines/tune_a_video.py) on the toy UNet, through the same
ComfyUI patch points the real UNet offers."""

import copy

import pytest
import torch

from toyworld.unet import ToyUNet
from baselines.tune_a_video import TuneAVideo, tune_a_video
from vrwkv_editor.vrwkv.frame_attention import first_and_previous, transformer_blocks
from vrwkv_editor.vrwkv.tuning import TuneSettings, tune

FRAMES = 4


def toy_unet(seed=0):
    torch.manual_seed(seed)
    return ToyUNet(base=16, mult=(1, 2), attention_levels=(0, 1), context_dim=8, d_head=8).double()


def clip(videos=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(videos * FRAMES, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.full((videos * FRAMES,), 500)
    context = torch.randn(videos, 1, 5, 8, generator=g, dtype=torch.float64).expand(-1, FRAMES, -1, -1)
    return x, t, context.reshape(videos * FRAMES, 5, 8)


def double(tav):
    """Temporal attentions in the toy UNet's float64, for tight comparisons."""
    tav.temporal.module.double()
    return tav


def run(unet, x, t, context, options, videos=1):
    return unet(x, t, context, transformer_options={**options, "cond_or_uncond": list(range(videos))})


def reference_sparse_causal(q, k, v, extra_options):
    """Frame by frame, by the definition: softmax(q_i [k_0, k_{i-1}]^T / sqrt(d)) [v_0, v_{i-1}],
    with frame 0 reading frame 0 twice; one video of FRAMES frames."""
    heads = extra_options["n_heads"]
    out = []
    for i in range(q.shape[0]):
        j = max(i - 1, 0)
        keys, values = torch.cat([k[0], k[j]]), torch.cat([v[0], v[j]])
        per_head = []
        for qh, kh, vh in zip(q[i].chunk(heads, -1), keys.chunk(heads, -1), values.chunk(heads, -1)):
            weights = torch.softmax(qh @ kh.T / qh.shape[-1] ** 0.5, dim=-1)
            per_head.append(weights @ vh)
        out.append(torch.cat(per_head, -1))
    return torch.stack(out)


def test_every_transformer_block_is_patched_under_the_key_it_calls():
    unet = toy_unet()
    tav = TuneAVideo(unet)
    called = []
    spy = lambda x, extra: called.append((*extra["block"], extra["block_index"])) or x   # noqa: E731
    options = tav.transformer_options({"patches": {"middle_patch": [spy]}})
    run(unet, *clip(), options)
    assert sorted(called) == tav.keys == sorted(transformer_blocks(unet))
    assert len(tav.keys) == sum(type(m).__name__ == "BasicTransformerBlock" for m in unet.modules()) == 7
    assert set(options["patches_replace"]["attn1"]) == set(tav.keys)


def test_first_and_previous_follows_tune_a_video_frame_indices():
    t = torch.arange(2 * FRAMES, dtype=torch.float64).view(2 * FRAMES, 1, 1)      # token value = frame number
    pairs = first_and_previous(t, FRAMES).view(2, FRAMES, 2)
    assert pairs[0].tolist() == [[0, 0], [0, 0], [0, 1], [0, 2]]                 # frame 0: itself twice
    assert pairs[1].tolist() == [[4, 4], [4, 4], [4, 5], [4, 6]]                 # second video: its own frames


def test_at_init_the_unet_is_sparse_causal_sd_exactly():
    unet, x, (t, context) = toy_unet(), clip()[0], clip()[1:]
    tav = TuneAVideo(unet)
    patched = run(unet, x, t, context, tav.transformer_options())
    sparse_only = run(unet, x, t, context, {"patches_replace": tav.transformer_options()["patches_replace"]})
    assert torch.equal(patched, sparse_only)              # zero-initialised temporal attention: bit-exact identity
    reference = {"patches_replace": {"attn1": {k: reference_sparse_causal for k in tav.keys}}}
    torch.testing.assert_close(patched, run(unet, x, t, context, reference), rtol=1e-10, atol=1e-10)
    plain = run(unet, x, t, context, {})
    assert not torch.allclose(patched[1:], plain[1:], atol=1e-4)                  # frames 1.. read other frames
    torch.testing.assert_close(patched[0], plain[0], rtol=1e-10, atol=1e-10)      # frame 0: plain self-attention


def randomised(tav, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tav.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return tav


def test_cfg_batch_splits_into_videos():
    unet = toy_unet()
    tav = randomised(double(TuneAVideo(unet)))
    x, t, context = clip(videos=2)
    together = run(unet, x, t, context, tav.transformer_options(), videos=2)
    alone = [run(unet, x[i:i + FRAMES], t[i:i + FRAMES], context[i:i + FRAMES], tav.transformer_options())
             for i in (0, FRAMES)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="does not split"):
        run(unet, x[:-1], t[:-1], context[:-1], tav.transformer_options(), videos=2)


def test_temporal_attention_reads_every_frame_sparse_causal_only_the_past():
    unet = toy_unet()
    x, t, context = clip()
    later = x.clone()
    later[-1] += 1.0
    for tav, past_changes in ((TuneAVideo(unet), False), (randomised(double(TuneAVideo(unet))), True)):
        a = run(unet, x, t, context, tav.transformer_options())
        b = run(unet, later, t, context, tav.transformer_options())
        assert torch.allclose(a[:-1], b[:-1], rtol=0, atol=1e-12) != past_changes


def test_gradients_reach_exactly_the_tune_a_video_set():
    unet = toy_unet()
    tav, params = tune_a_video(unet)
    names = {id(p): n for n, p in unet.named_parameters()}
    queries = [names[id(p)] for p in params if id(p) in names]
    assert sorted(queries) == sorted(f"{n}.weight" for n, _ in unet.named_modules()
                                     if n.endswith(("attn1.to_q", "attn2.to_q")))
    assert len(queries) == 2 * len(tav.keys)
    randomised(tav)      # at zero init only to_out would receive a gradient
    x, t, context = clip()
    run(unet, x, t, context, tav.transformer_options()).square().mean().backward()
    trained = {id(p) for p in params}
    everything = list(unet.parameters()) + list(tav.temporal.module.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for p in everything if id(p) not in trained)
    assert all(not p.requires_grad for layer in tav.temporal.module.values() for p in layer.norm.parameters())


def test_the_packs_tuning_loop_trains_it():
    unet = toy_unet().float()
    tav, params = tune_a_video(unet)
    before = [p.detach().clone() for p in params]
    x, t, context = (v.float() if v.is_floating_point() else v for v in clip())
    options = tav.transformer_options({"cond_or_uncond": [0]})

    def step_loss(generator):
        noise = torch.randn(x.shape, generator=generator)
        return (unet(x + noise, t, context, transformer_options=options) - noise).square().mean()

    losses = tune(params, step_loss, TuneSettings(steps=3, lr=1e-3, weight_decay=0.0))
    assert len(losses) == 3
    moved = [not torch.equal(b, p) for b, p in zip(before, params)]
    assert all(moved[:2 * len(tav.keys)])                                  # every to_q
    out_weights = [layer.to_out.weight for layer in tav.temporal.module.values()]
    assert all(w.abs().sum() > 0 for w in out_weights)                    # temporal attention left zero init


def test_temporal_attentions_keep_identity_and_dtype_across_clone_and_moves():
    tav = TuneAVideo(toy_unet().float())
    options = {"transformer_options": tav.transformer_options()}
    copied = copy.deepcopy(options)                      # what ModelPatcher.clone() does to model options
    assert copied["transformer_options"]["patches"]["middle_patch"][0] is tav.temporal
    assert tav.temporal.to(torch.float16) is tav.temporal
    assert all(p.dtype == torch.float32 for p in tav.temporal.module.parameters())
    tav.temporal.to("meta")
    assert all(p.device.type == "meta" for p in tav.temporal.module.parameters())


def test_a_unet_without_transformer_blocks_is_refused():
    with pytest.raises(ValueError, match="no transformer blocks"):
        TuneAVideo(torch.nn.Sequential(torch.nn.Linear(2, 2)))
