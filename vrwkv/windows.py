"""Long clips in frame windows: one UNet call per window, outputs fused with overlap ramps.

An APPLY_MODEL wrapper, inside BaseModel.apply_model: every sampler runs it, and other
nodes' wrappers wrap it. Each window slices the same frames of every video and of each
per-item tensor in `c` (prompts, ControlNet residuals), so memory is bounded by the window.
With `carry` the blocks carry Bi-WKV state between windows (vrwkv/carry.py) for one
sampling run. Calls under autograd pass through: tuning has its own window.
"""

import torch

from .carry import CarryStore, WindowContext

CONTEXT_KEY = "vrwkv_window"   # transformer_options entry the VRWKV patch reads


def frame_windows(frames: int, length: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of `length`-frame windows covering `frames`, neighbours sharing at least
    `overlap` frames; one window when length is 0 or >= frames."""
    if length <= 0 or length >= frames:
        return [(0, frames)]
    if not 0 <= overlap < length:
        raise ValueError(f"context window overlap {overlap} must be at least 0 and less than the window "
                         f"length {length}; lower the overlap")
    stride = length - overlap
    starts = list(range(0, frames - length, stride)) + [frames - length]
    return [(s, s + length) for s in starts]


def blend_weights(windows: list[tuple[int, int]], frames: int) -> list[torch.Tensor]:
    """Per-frame weights of each window's output, summing to 1 at every frame: a frame counts
    more in the window where it is further from an edge (clip ends are no edges)."""
    raw = []
    for s, e in windows:
        t = torch.arange(s, e, dtype=torch.float64)
        left = t - s + 1 if s > 0 else torch.full_like(t, frames)
        right = e - t if e < frames else torch.full_like(t, frames)
        raw.append(torch.minimum(left, right))
    total = torch.zeros(frames, dtype=torch.float64)
    for (s, e), r in zip(windows, raw):
        total[s:e] += r
    return [(r / total[s:e]).float() for (s, e), r in zip(windows, raw)]


def _slice_frames(value, start: int, end: int, frames: int):
    """value[start:end] for a tensor with one item per frame, else value."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == frames:
        return value[start:end]
    return value


def _slice_batch(value, index: torch.Tensor, batch: int):
    """value[index] for tensors with one item per batch entry, also nested (ControlNet's residuals)."""
    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _slice_batch(v, index, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_slice_batch(v, index, batch) for v in value)
    return value


class ContextWindows:
    """Runs the UNet in frame windows; shared by the MODEL's clones."""

    def __init__(self, length: int, overlap: int, carry: bool):
        if length < 1:
            raise ValueError(f"context window length must be at least 1 frame, got {length}")
        frame_windows(length + 1, length, overlap)      # checks the overlap
        self.length, self.overlap, self.carry = length, overlap, carry
        self.store = CarryStore()

    def apply_model_wrapper(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options=None, **kwargs):
        """APPLY_MODEL wrapper: `executor` runs the next wrapper or the UNet."""
        options = transformer_options or {}
        c = {"c_concat": c_concat, "c_crossattn": c_crossattn, "control": control, "transformer_options": options,
             **kwargs}
        return self(lambda x, t, **c: executor(x, t, **c),
                    {"input": x, "timestep": t, "c": c, "cond_or_uncond": options.get("cond_or_uncond") or [0]})

    def sampling_run(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: each sampling run (one trajectory) starts and ends with no states."""
        self.store.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            self.store.reset()

    def __call__(self, apply_model, args):
        """As a UNet function wrapper: `args` holds "input", "timestep", "c", "cond_or_uncond"."""
        x, c, cond_or_uncond = args["input"], args["c"], args["cond_or_uncond"]
        videos = len(cond_or_uncond)
        if x.shape[0] % videos:
            raise ValueError(f"VRWKV Context Windows: the UNet batch of {x.shape[0]} does not split into "
                             f"{videos} videos; every prompt must cover the same number of frames")
        frames = x.shape[0] // videos
        windows = frame_windows(frames, self.length, self.overlap)
        if len(windows) == 1 or torch.is_grad_enabled():
            return apply_model(x, args["timestep"], **c)
        options = c.get("transformer_options", {})
        key = (tuple(options.get("uuids") or ()), tuple(cond_or_uncond), tuple(x.shape))
        store = self.store if self.carry else None
        if store is not None:
            store.begin(key)
        try:
            return self._run_windows(apply_model, args, windows, frames, store, key)
        except BaseException:
            if store is not None:
                store.release(key)
            raise

    def _run_windows(self, apply_model, args, windows, frames, store, key):
        x, c, videos = args["input"], args["c"], len(args["cond_or_uncond"])
        options = c.get("transformer_options", {})
        out, anchors = None, {}
        for i, ((s, e), weight) in enumerate(zip(windows, blend_weights(windows, frames))):
            index = (torch.arange(videos)[:, None] * frames + torch.arange(s, e)).flatten()
            context = WindowContext(i, windows, store, key, anchors=anchors)
            window_c = {k: _slice_batch(v, index, x.shape[0]) for k, v in c.items() if k != "transformer_options"}
            window_c["transformer_options"] = {**options, CONTEXT_KEY: context,
                                               "sigmas": _slice_frames(options.get("sigmas"), s, e, frames)}
            y = apply_model(x[index.to(x.device)], _slice_batch(args["timestep"], index, x.shape[0]), **window_c)
            if store is not None:
                context.hand_on()
            if out is None:
                out = torch.zeros((x.shape[0],) + tuple(y.shape[1:]), device=y.device, dtype=y.dtype)
            ramp = weight.to(y.device, y.dtype).repeat(videos).view(-1, *[1] * (y.ndim - 1))
            out.index_add_(0, index.to(y.device), y * ramp)
            del window_c, y, context          # free this window's prompt copies before the next
        return out
