"""Temporal-coherence and fidelity metrics of a clip: optical-flow warp error, flicker, motion
fidelity (flow end-point error against the source), PSNR, and for object tracks the track
error and motion match against a reference track.

numpy and opencv-python only (cv2 is imported where needed, so the package imports without
it). Frames are (T, H, W, 3) floats in [0, 1] (ComfyUI IMAGE batches or numpy); errors are in
those units, flows and track distances in pixels of the frames given.

Flow is opencv's Farneback on principal_grey frames (chosen over DIS for small clips:
CONTRIBUTING.md's design notes). Frames with a short side under FLOW_MIN_SIDE are upscaled
for it by an integer factor, or its windows and pyramid cover most of the frame and a still
background gets spurious flow. Motion up to about 1/8 of the short side per frame is measured.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

FLOW_MIN_SIDE = 128
# Forward-backward check (Sundaram et al. 2010; Ruder et al. 2016): a pixel's flow is trusted
# when there and back returns within 0.01 x the squared flow lengths + 0.5 px^2.
_FB_RELATIVE = 0.01
_FB_ABSOLUTE = 0.5

Progress = Callable[[int, int], None]


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError("the video metrics need opencv-python: `pip install opencv-python` (or the pack's "
                          "requirements.txt) in the Python that runs them, e.g. ComfyUI's") from e
    return cv2


def as_numpy(x) -> np.ndarray:
    """A torch tensor (torch itself is not needed here) or array-like as numpy."""
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x)


def as_frames(frames, name: str = "frames") -> np.ndarray:
    """A ComfyUI IMAGE tensor or numpy array as float32 numpy (T, H, W, 3)."""
    frames = np.asarray(as_numpy(frames), dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{name}: expected frames shaped (T, H, W, 3) (a ComfyUI IMAGE batch, RGB in [0, 1]), "
            f"got shape {tuple(frames.shape)}. Give an RGB image batch (drop an alpha channel first)."
        )
    if frames.shape[0] < 2:
        raise ValueError(f"{name}: temporal metrics need at least 2 frames, got {frames.shape[0]}.")
    return frames


Grey = Callable[[np.ndarray], np.ndarray]


def _grey_u8(frame: np.ndarray) -> np.ndarray:
    cv2 = _cv2()

    return cv2.cvtColor((np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def principal_grey(frames: np.ndarray) -> Grey:
    """frame -> 8-bit grey along the first principal axis of the clip's colours, stretched over
    0..255: a saturated object on a backdrop of similar brightness (a red disc on mid grey)
    keeps the edge luma loses. A clip of one colour falls back to luma."""
    pixels = frames.reshape(-1, 3)[:: max(1, frames[..., 0].size // 65536)].astype(np.float64)
    mean = pixels.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    axis = vectors[:, -1]
    projected = (pixels - mean) @ axis
    low, span = projected.min(), projected.max() - projected.min()
    if not span > 1e-6:
        return _grey_u8

    def grey(frame):
        level = ((frame.reshape(-1, 3) - mean) @ axis - low) / span
        return (np.clip(level, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(frame.shape[:2])
    return grey


def optical_flow(a: np.ndarray, b: np.ndarray, grey: Grey = _grey_u8) -> np.ndarray:
    """Dense flow (H, W, 2) from frame a to frame b (both (H, W, 3)), in pixels (dx, dy):
    the content at a[y, x] is found at b[y + dy, x + dx]. `grey` makes the 8-bit image the
    flow reads (luma by default; the clip metrics use principal_grey of the clip)."""
    cv2 = _cv2()

    h, w = a.shape[:2]
    scale = max(1, int(np.ceil(FLOW_MIN_SIDE / min(h, w))))
    ga, gb = grey(a), grey(b)
    if scale > 1:
        size = (w * scale, h * scale)
        ga = cv2.resize(ga, size, interpolation=cv2.INTER_CUBIC)
        gb = cv2.resize(gb, size, interpolation=cv2.INTER_CUBIC)
    flow = cv2.calcOpticalFlowFarneback(
        ga, gb, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
    )
    if scale > 1:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale
    return flow.astype(np.float32)


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """image read at (x + flow) per pixel (bilinear), and where that point lies inside it."""
    cv2 = _cv2()

    h, w = flow.shape[:2]
    map_x = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    map_y = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Half a pixel of slack: a border pixel whose flow points a hair outward still lands on itself.
    inside = (map_x >= -0.5) & (map_x <= w - 0.5) & (map_y >= -0.5) & (map_y <= h - 0.5)
    return sampled, inside


@dataclass
class _Motion:
    """Per consecutive pair t -> t+1, in frame t+1's pixels: the flow back to frame t and
    where it passes the forward-backward check (and stays inside frame t)."""

    backward: np.ndarray  # (T-1, H, W, 2)
    reliable: np.ndarray  # (T-1, H, W) bool


def _motion(frames: np.ndarray, tick: Callable[[], None] = lambda: None) -> _Motion:
    """Two flows per pair on the clip's principal_grey; tick() after each."""
    backward, reliable = [], []
    grey = principal_grey(frames)
    for t in range(len(frames) - 1):
        fwd = optical_flow(frames[t], frames[t + 1], grey)
        tick()
        bwd = optical_flow(frames[t + 1], frames[t], grey)
        tick()
        fwd_there, inside = _sample(fwd, bwd)
        round_trip = np.sum((bwd + fwd_there) ** 2, axis=-1)
        tolerance = _FB_RELATIVE * (np.sum(bwd**2, axis=-1) + np.sum(fwd_there**2, axis=-1)) + _FB_ABSOLUTE
        backward.append(bwd)
        reliable.append(inside & (round_trip <= tolerance))
    return _Motion(np.stack(backward), np.stack(reliable))


def _warp_error(frames: np.ndarray, motion: _Motion, masked: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: mean abs error between frame t+1 and frame t warped onto it by `motion`, and
    the share of pixels whose flow passed the check; `masked` counts only those (the source's
    mask, the same for every clip measured against it), otherwise every pixel counts."""
    errors, shares = [], []
    for t, (bwd, reliable) in enumerate(zip(motion.backward, motion.reliable)):
        warped, _ = _sample(frames[t], bwd)
        diff = np.abs(frames[t + 1] - warped).mean(axis=-1)
        if masked:
            errors.append(diff[reliable].mean() if reliable.any() else np.nan)
        else:
            errors.append(diff.mean())
        shares.append(reliable.mean())
    return np.array(errors, np.float64), np.array(shares, np.float64)


def warp_error(frames, source=None) -> tuple[np.ndarray, np.ndarray]:
    """Per consecutive pair: the mean abs error between frame t+1 and frame t warped onto it,
    and the share of pixels whose flow passes the forward-backward check.

    With a `source` (the clip the frames were made from, same frame count): the frames warped
    by the source's flow, over the pixels where it passes the check (Lai et al. 2018's video
    consistency, with absolute differences): do the frames change as the source does? Without
    one: the frames' own flow over every pixel, so motion it cannot follow still counts."""
    frames = as_frames(frames)
    if source is None:
        return _warp_error(frames, _motion(frames), masked=False)
    frames, source, _ = match_source(frames, source)
    return _warp_error(frames, _motion(source), masked=True)


def flicker(frames) -> np.ndarray:
    """Per consecutive pair: change of the frame's mean colour, mean over R, G, B of
    |mean_c(t+1) - mean_c(t)|. Motion inside the frame barely moves it; a global brightness
    or colour change does."""
    means = as_frames(frames).mean(axis=(1, 2)).astype(np.float64)
    return np.abs(np.diff(means, axis=0)).mean(axis=-1)


def _epe(edited: _Motion, source: _Motion) -> np.ndarray:
    epe = np.linalg.norm(edited.backward - source.backward, axis=-1)
    return np.array([e[r].mean() if r.any() else np.nan for e, r in zip(epe, source.reliable)], np.float64)


def match_source(edited, source) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Both clips as frames, the source resized to the edited clip's size if needed, and
    the source's (H, W) before resizing (None if it was not). The frame counts must match."""
    cv2 = _cv2()

    edited, source = as_frames(edited, "edited"), as_frames(source, "source")
    if len(edited) != len(source):
        raise ValueError(
            f"edited has {len(edited)} frames but source has {len(source)}: the metrics compare frame t "
            "of one with frame t of the other. Give the source clip the edit was made from (same frames)."
        )
    h, w = edited.shape[1:3]
    if source.shape[1:3] == (h, w):
        return edited, source, None
    shrink = source.shape[1] * source.shape[2] > h * w
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = np.stack([cv2.resize(f, (w, h), interpolation=interpolation) for f in source])
    return edited, resized, source.shape[1:3]


def flow_epe(edited, source) -> np.ndarray:
    """Motion fidelity per consecutive pair: mean end-point error (px of the edited clip)
    between its flow and the source's where the source's passes the check (0: same motion)."""
    edited, source, _ = match_source(edited, source)
    return _epe(_motion(edited), _motion(source))


def psnr(a, b) -> float:
    """PSNR in dB of two same-shaped images or clips in [0, 1] (inf when identical)."""
    a, b = np.asarray(as_numpy(a), np.float64), np.asarray(as_numpy(b), np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr needs same-shaped inputs, got {a.shape} and {b.shape}.")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


class TrackError(NamedTuple):
    """distance: mean px between the two tracks over the frames where either shows the object,
    a frame where only one does counting at the frame's diagonal (farther than any two points
    inside it), so losing the object never scores better than following it; lost: the share
    of those frames where only one shows it; matched: the mean px over the frames where both
    do (NaN where none)."""

    distance: float
    lost: float
    matched: float


def _tracks(track, reference, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(track, np.float64), np.asarray(reference, np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape != b.shape:
        raise ValueError(f"{name} needs two tracks shaped (T, 2) of the same T, got {a.shape} and {b.shape}.")
    return a, b


def _diagonal(frame_size) -> float:
    h, w = frame_size
    if not (h > 0 and w > 0):
        raise ValueError(f"frame_size must be the frames' (height, width) in pixels, got {frame_size}.")
    return float(np.hypot(h, w))


def track_error(track, reference, frame_size: tuple[int, int]) -> TrackError:
    """TrackError of a centroid track against a reference, both (T, 2) px with NaN where the
    object is absent, on frames of `frame_size` (H, W); NaN distance if neither shows it."""
    a, b = _tracks(track, reference, "track_error")
    penalty = _diagonal(frame_size)
    in_a, in_b = ~np.isnan(a).any(axis=1), ~np.isnan(b).any(axis=1)
    either, both = in_a | in_b, in_a & in_b
    if not either.any():
        return TrackError(float("nan"), 0.0, float("nan"))
    gap = np.full(len(a), penalty)
    gap[both] = np.linalg.norm(a[both] - b[both], axis=1)
    matched = float(gap[both].mean()) if both.any() else float("nan")
    return TrackError(float(gap[either].mean()), float((either & ~both).sum() / either.sum()), matched)


class MotionMatch(NamedTuple):
    """displacement: mean px between the track's and the reference's frame-to-frame
    displacements over the pairs where either track shows the object in both frames (a pair
    only one of them has counts at the frame's diagonal); speed, reference_speed: the mean
    displacement length (px per frame) of each over its own such pairs (NaN where none)."""

    displacement: float
    speed: float
    reference_speed: float


def motion_match(track, reference, frame_size: tuple[int, int]) -> MotionMatch:
    """How a track's frame-to-frame motion matches a reference's (tracks as for track_error)."""
    a, b = _tracks(track, reference, "motion_match")
    penalty = _diagonal(frame_size)
    da, db = np.diff(a, axis=0), np.diff(b, axis=0)
    in_a, in_b = ~np.isnan(da).any(axis=1), ~np.isnan(db).any(axis=1)
    either, both = in_a | in_b, in_a & in_b
    gap = np.full(len(da), penalty)
    gap[both] = np.linalg.norm(da[both] - db[both], axis=1)
    speed = lambda d, ok: float(np.linalg.norm(d[ok], axis=1).mean()) if ok.any() else float("nan")
    return MotionMatch(float(gap[either].mean()) if either.any() else float("nan"), speed(da, in_a), speed(db, in_b))


@dataclass
class CoherenceReport:
    """Per-pair arrays (T-1,) for an edited clip and, with a source, the source's own values
    (the level of a clip with real motion). warp_error is warp_error(edited, source) and
    warp_reliable the share of pixels its flow trusts; with a source, own_warp_error is
    warp_error(edited) and source_warp_error the source's by its own flow."""

    warp_error: np.ndarray
    warp_reliable: np.ndarray
    flicker: np.ndarray
    source_warp_error: np.ndarray | None = None
    source_warp_reliable: np.ndarray | None = None
    source_flicker: np.ndarray | None = None
    motion_epe: np.ndarray | None = None
    own_warp_error: np.ndarray | None = None
    own_warp_reliable: np.ndarray | None = None
    source_resized_from: tuple[int, int] | None = None  # (H, W) of the source before resizing

    def means(self) -> dict[str, float]:
        """nanmean of every per-pair array present, by field name."""
        return {
            name: float(np.nanmean(value)) if np.isfinite(value).any() else float("nan")
            for name, value in vars(self).items()
            if isinstance(value, np.ndarray)
        }

    def summary(self) -> str:
        m = self.means()
        pairs = len(self.warp_error)
        lines = [f"{pairs + 1} frames, {pairs} pairs (lower is better everywhere)"]

        def line(label, key, unit, source_key=None):
            text = f"{label}: {m[key]:.4f}{unit}"
            if source_key in m:
                text += f" (source {m[source_key]:.4f}{unit})"
            lines.append(text)

        if "own_warp_error" in m:
            line("warp error by the source's flow", "warp_error", "", "source_warp_error")
            line("warp error by its own flow", "own_warp_error", "")
        else:
            line("warp error", "warp_error", "")
        line("flicker", "flicker", "", "source_flicker")
        if "motion_epe" in m:
            line("motion EPE vs source", "motion_epe", " px")
        if "own_warp_error" in m:
            lines.append(f"source's flow reliable on {100 * m['warp_reliable']:.0f}% of pixels (the rest, "
                         f"occlusions, left out); the edit's own flow on {100 * m['own_warp_reliable']:.0f}%")
        else:
            lines.append(f"flow reliable on {100 * m['warp_reliable']:.0f}% of pixels (all counted)")
        if self.source_resized_from:
            h, w = self.source_resized_from
            lines.append(f"source resized from {w}x{h} to the edited size for the measurement")
        return "\n".join(lines)


def coherence_report(edited, source=None, progress: Progress | None = None) -> CoherenceReport:
    """All temporal metrics of an edited clip, and against its source when given; each clip's
    flows (2 per pair) are computed once, with ``progress(done, total)`` after each."""
    if source is None:
        clips, resized_from = [as_frames(edited, "edited")], None
    else:
        *clips, resized_from = match_source(edited, source)
    total = 2 * (len(clips[0]) - 1) * len(clips)
    done = iter(range(1, total + 1))
    tick = (lambda: progress(next(done), total)) if progress else (lambda: None)
    motions = [_motion(clip, tick) for clip in clips]
    own = _warp_error(clips[0], motions[0], masked=False)
    if source is None:
        return CoherenceReport(*own, flicker(clips[0]))
    edited, source = clips
    return CoherenceReport(
        *_warp_error(edited, motions[1], masked=True), flicker(edited),
        *_warp_error(source, motions[1], masked=True), flicker(source),
        motion_epe=_epe(*motions), own_warp_error=own[0], own_warp_reliable=own[1], source_resized_from=resized_from)
