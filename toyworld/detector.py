"""Reads a toy-world image back: the object's mask, colour, shape and centroid.

The object is what differs from the known background. Its colour is the palette entry nearest
its core pixels' mean; its shape and size are the rendered template, centred on its centroid,
that best overlaps its soft coverage (soft IoU: bounding-box fill ratios are too coarse at 10 px).
"""

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .world import COLOURS, SHAPES, SIZES, background, coverage

THRESHOLD = 0.7          # |image - background| above this: the object (about half coverage)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    size: str | None
    x: float | None          # centroid, pixels
    y: float | None
    area: int
    touches_edge: bool       # shape is unreliable when the object is cut by the frame

    @property
    def named(self) -> tuple:
        """The attributes a caption names and adherence checks: (colour, shape)."""
        return self.colour, self.shape


def detect(image: torch.Tensor) -> Detection:
    """image: (3, H, W) in [-1, 1]. The largest connected region differing from the background."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    img = image.detach().float().cpu()
    h, w = img.shape[1:]
    diff = (img - background(h)[:, :h, :w]).norm(dim=0).numpy()
    mask = (diff > THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return Detection(None, None, None, None, None, 0, False)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = labels == k
    ys, xs = np.nonzero(region)
    area = len(xs)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    touches = bool(x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1)
    core = region & (diff > np.percentile(diff[region], 50))
    mean = img.numpy()[:, core].mean(axis=1)
    colour = _NAMES[int(np.argmin(((_PALETTE - mean) ** 2).sum(axis=1)))]
    weights = diff * region
    cx = float((weights.sum(axis=0) * (np.arange(w) + 0.5)).sum() / weights.sum())
    cy = float((weights.sum(axis=1) * (np.arange(h) + 0.5)).sum() / weights.sum())
    # soft coverage of the chosen colour, kept near the region (stray specks elsewhere ignored)
    near = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    full = np.linalg.norm(_PALETTE[_NAMES.index(colour)][:, None, None] - background(h)[:, :h, :w].numpy(), axis=0)
    alpha = torch.from_numpy(np.clip(diff / full, 0, 1) * near)
    best = max(((_iou(alpha, coverage(sh, r, cx, cy, h)), sh, sz) for sh in SHAPES for sz, r in SIZES.items()))
    return Detection(colour, best[1], best[2], cx, cy, area, touches)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.minimum(a, b).sum() / torch.maximum(a, b).sum().clamp_min(1e-6))
