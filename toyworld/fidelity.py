"""Toy-world measures of an edited clip from a world's detections (anything with .x, .y,
.touches_edge, .colour and .named): the object's track, the share of frames showing the
prompted attributes, how often neighbouring frames agree on them and, in the textured world,
on the texture's unnamed detail. The generic video metrics are the pack's (vrwkv/metrics.py)."""

import numpy as np
import torch

from .detector import Detection, detect
from .textured_detector import detail_similarity


def detections(frames: torch.Tensor, detector=detect) -> list:
    """(T, 3, H, W) in [-1, 1] -> one detection per frame (by default the flat world's
    detector; worlds.get_world(name).detect for another world)."""
    return [detector(f) for f in frames]


def track(found: list) -> np.ndarray:
    """(T, 2) centroids (x, y) in pixels, NaN where no object was found."""
    return np.array([(d.x, d.y) if d.x is not None else (np.nan, np.nan) for d in found], np.float64)


def whole_in_frame(found: list) -> np.ndarray:
    """Frames whose object was found and does not touch the frame's edge (its shape is readable)."""
    return np.array([d.x is not None and not d.touches_edge for d in found])


def edit_fidelity(found: list, colour: str, shape: str, frames: np.ndarray) -> float:
    """Share of the selected frames whose object has the prompted colour and shape (flat world)."""
    return named_fidelity(found, (colour, shape), frames)


def named_fidelity(found: list, named: tuple, frames: np.ndarray) -> float:
    """Share of the selected frames whose detection reads the prompted attributes (`named`, as
    a detection's .named: (colour, shape) in the flat world)."""
    chosen = [d for d, keep in zip(found, frames) if keep]
    if not chosen:
        raise ValueError("no frame selected: the source object leaves the frame in every frame")
    return sum(d.named == tuple(named) for d in chosen) / len(chosen)


def _neighbours(found: list, frames: np.ndarray) -> list:
    return [(a, b) for a, b, keep_a, keep_b in zip(found, found[1:], frames, frames[1:]) if keep_a and keep_b]


def attribute_consistency(found: list, frames: np.ndarray) -> float:
    """Share of consecutive pairs of selected frames whose detected named attributes (colour
    and shape) agree: the way an edit flickers in what a caption names (a frame without an
    object disagrees with any frame). NaN when no two neighbouring frames are selected (an
    object that is whole only now and then, as on the exit path)."""
    pairs = _neighbours(found, frames)
    if not pairs:
        return float("nan")
    return sum(a.colour is not None and a.named == b.named for a, b in pairs) / len(pairs)


def detail_consistency(found: list, frames: np.ndarray) -> float:
    """Textured world: mean over consecutive pairs of selected frames of the similarity of the
    object's texture descriptors (textured_detector.detail_similarity: 1 = the same texture in
    the same place on the object, ~0 = unrelated, e.g. stripes in one frame and spots in the
    next), a frame without an object or texture counting 0: how steady the detail the
    caption does not name stays. NaN when no two neighbouring frames are selected. A
    rendered clip scores about 0.99."""
    pairs = _neighbours(found, frames)
    if not pairs:
        return float("nan")
    scores = [detail_similarity(a, b) for a, b in pairs]
    return float(np.mean([0.0 if np.isnan(s) else s for s in scores]))


def as_image_batch(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> (T, H, W, 3) in [0, 1], the layout of a ComfyUI IMAGE batch."""
    return ((frames.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


__all__ = ["Detection", "detections", "track", "whole_in_frame", "edit_fidelity", "named_fidelity",
           "attribute_consistency", "detail_consistency", "as_image_batch"]
