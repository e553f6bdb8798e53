"""Cross-frame attention (vrwkv/frame_attention.py): what each frame reads, the clip's first frame
in every window of a long clip, and the toy pipeline's patched UNet at init."""

import copy

import torch
from vrwkv_editor.vrwkv.carry import WindowContext
from vrwkv_editor.vrwkv.config import PAPER
from vrwkv_editor.vrwkv.frame_attention import SparseCausalAttention, sdpa
from vrwkv_editor.vrwkv.windows import CONTEXT_KEY, frame_windows

from toyworld.model import ToyModel
from toyworld.pipeline import Method, prepare

FRAMES, TOKENS, HEADS, DIM = 6, 5, 2, 8


def qkv(videos=2, frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(videos * frames, TOKENS, DIM, generator=g, dtype=torch.float64) for _ in range(3)]


def options(videos=2, **extra):
    return {"cond_or_uncond": list(range(videos)), "n_heads": HEADS, "block": ("output", 3), "block_index": 0,
            **extra}


def test_each_frame_attends_to_the_first_and_its_previous_frame():
    q, k, v = qkv()
    out = SparseCausalAttention()(q, k, v, options()).view(2, FRAMES, TOKENS, DIM)
    grid = [t.view(2, FRAMES, TOKENS, DIM) for t in (q, k, v)]
    for video in range(2):
        for i in range(FRAMES):
            keys = [0, max(i - 1, 0)]
            expected = sdpa(grid[0][video, i:i + 1], *(torch.cat([t[video, j] for j in keys])[None] for t in grid[1:]),
                            HEADS)
            assert torch.allclose(out[video, i], expected[0], atol=1e-12)
    # frame 0 reads its own tokens twice: plain self-attention
    assert torch.allclose(out[:, 0], sdpa(grid[0][:, 0], grid[1][:, 0], grid[2][:, 0], HEADS), atol=1e-12)


def test_every_window_reads_the_clip_s_first_frame_and_the_frame_before_it():
    """A long clip in windows: every window's frames read the whole clip's first frame (kept by
    the first window) and a window's first frame reads the frame before the window (kept by the
    window before), so each window attends exactly as the whole clip does; a window that keeps
    its own anchors does not."""
    frames = 12
    q, k, v = qkv(frames=frames)
    attention = SparseCausalAttention()
    whole = attention(q, k, v, options()).view(2, frames, TOKENS, DIM)
    windows, shared = frame_windows(frames, 4, 1), {}
    for i, (s, e) in enumerate(windows):
        index = (torch.arange(2)[:, None] * frames + torch.arange(s, e)).flatten()
        context = WindowContext(i, windows, None, (), anchors=shared)
        out = attention(q[index], k[index], v[index], options(**{CONTEXT_KEY: context})).view(2, e - s, TOKENS, DIM)
        assert torch.allclose(out[:, 1:], whole[:, s + 1:e], atol=1e-12)
        assert torch.allclose(out[:, 0], whole[:, s], atol=1e-12)
        if i:
            alone = WindowContext(0, windows, None, ())          # a window that keeps its own first frame
            own = attention(q[index], k[index], v[index], options(**{CONTEXT_KEY: alone})).view(out.shape)
            assert not torch.allclose(own[:, 1:], whole[:, s + 1:e], atol=1e-3)
    assert not shared.keys() - {(("output", 3, 0), "first")}        # each frame before a window was read once


def test_patched_toy_unet_at_init_is_sd_with_cross_frame_attention():
    """The blocks are an identity at init; the attention is not: frame 0 is exactly plain SD,
    later frames read the first and previous frame."""
    torch.manual_seed(0)
    base = ToyModel({"base": 16, "mult": (1, 2), "attention_levels": (0, 1)})
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sigma = base.sigmas[300].expand(4)
    with torch.no_grad():
        cond = base.text(["a red circle"]).expand(4, -1, -1)
        plain = base.denoise(x, sigma, cond, {"cond_or_uncond": [0]})
    method = Method("cross-frame", "vrwkv", config=PAPER.replace(frame_attention="first+previous"))
    model, opts, _ = prepare(base, method)
    with torch.no_grad():
        patched = model.denoise(x, sigma, cond, {**opts, "cond_or_uncond": [0]})
        attn_only = model.denoise(x, sigma, cond, {"patches_replace": opts["patches_replace"], "cond_or_uncond": [0]})
    assert torch.equal(patched, attn_only)
    assert torch.allclose(patched[0], plain[0], atol=1e-6)
    assert not torch.allclose(patched[1:], plain[1:], atol=1e-3)
    _, self_opts, _ = prepare(copy.deepcopy(base), Method("self", "vrwkv", config=PAPER))
    assert "patches_replace" not in self_opts
