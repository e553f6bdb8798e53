"""Reads a textured-world image back (textured.py) without knowing its backdrop: the main
object's colour and shape (what captions name), size, centroid, texture kind and
orientation, and a descriptor of its texture (the detail no caption names).

The main object is the only saturated thing in the image (chroma = max - min over R, G, B:
>= 0.9 on the object, < 0.2 on backdrop and distractors), so its mask is the largest
connected region of chroma above CHROMA. Colour: the palette entry whose chroma direction
(the colour minus its grey mean) is closest in angle to the region's mean. Shape and size:
the rendered template, centred on the centroid, that overlaps the soft chroma mask best,
over every shape and a grid of radii. Texture: where each pixel lies between the colour's
full and dark shade (0 full, 1 dark, the "shade" map); its structure tensor over the
object's interior is coherent for stripes and not for spots. The descriptor is the shade
map sampled on a grid fixed to the object's centroid: two frames that draw the same
texture on a moving object give the same descriptor, which is what `detail_similarity`
compares.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .textured import TEXTURES, dark_shade
from .world import COLOURS, coverage

CHROMA = 0.45                  # the object's mask: chroma above this (the backdrop stays under 0.2)
SMOOTH = 0.6                   # Gaussian sigma (px) of the blur before the chroma
MIN_AREA = 12                  # smaller regions are specks, not an object
RADIUS_STEPS = np.arange(-0.75, 0.76, 0.25)   # tried around the radius the area implies
COHERENCE = 0.55               # structure-tensor coherence above this: stripes; below: spots
TEXTURE_ENERGY = 0.01          # mean squared shade gradient below this: no texture at all
DETAIL_REACH = 5               # the descriptor samples offsets -5..5 px from the centroid
_UNIT_AREAS = {"circle": np.pi, "square": 4.0, "triangle": 2.0}   # area / radius^2
_NAMES = list(COLOURS)
_BRIGHT = np.array([COLOURS[c] for c in _NAMES], np.float32)
_DARK = np.stack([dark_shade(c).numpy() for c in _NAMES]).astype(np.float32)
_HUES = _BRIGHT - _BRIGHT.mean(axis=1, keepdims=True)
_HUES /= np.linalg.norm(_HUES, axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class TexturedDetection:
    colour: str | None
    texture: str | None              # unnamed detail: striped or spotted
    shape: str | None
    radius: float | None
    x: float | None                  # centroid, pixels
    y: float | None
    area: int
    touches_edge: bool               # shape and texture are unreliable when the object is cut by the frame
    angle: float | None = None       # texture orientation, radians in [0, pi): the stripes' normal
    coherence: float | None = None   # structure-tensor coherence of the shade map (1: stripes)
    detail: np.ndarray | None = field(default=None, repr=False)  # (11, 11) shade map around the centroid, NaN off the object

    @property
    def named(self) -> tuple:
        """What a caption names: (colour, shape)."""
        return self.colour, self.shape


NOTHING = TexturedDetection(None, None, None, None, None, None, 0, False)


def chroma(img: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (H, W) max minus min over the channels."""
    return img.max(axis=0) - img.min(axis=0)


def detect(image: torch.Tensor) -> TexturedDetection:
    """image: (3, H, W) in [-1, 1]. The largest saturated connected region."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    img = image.detach().float().cpu().numpy()
    h, w = img.shape[1:]
    c = chroma(img)
    smooth = np.stack([cv2.GaussianBlur(ch, (3, 3), SMOOTH) for ch in img])   # pixel noise is neither chroma nor texture
    count, labels, stats, _ = cv2.connectedComponentsWithStats((chroma(smooth) > CHROMA).astype(np.uint8), connectivity=8)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < MIN_AREA:
        return NOTHING
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = labels == k
    ys, xs = np.nonzero(region)
    touches = bool(xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1)

    core = region & (c > np.median(c[region]) * 0.5)
    mean = smooth[:, core].mean(axis=1)
    hue = mean - mean.mean()
    ci = int(np.argmax(_HUES @ hue))
    colour = _NAMES[ci]

    near = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    alpha = np.clip((c - 0.1) / 0.75, 0, 1) * near
    cx = float((alpha.sum(axis=0) * (np.arange(w) + 0.5)).sum() / alpha.sum())
    cy = float((alpha.sum(axis=1) * (np.arange(h) + 0.5)).sum() / alpha.sum())
    shape, radius = _fit_shape(torch.from_numpy(alpha.astype(np.float32)), cx, cy, h)

    shade = _shade(smooth, ci)
    interior = cv2.erode((region & (alpha >= 0.9)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    texture, angle, coherence = _texture(shade, interior)
    return TexturedDetection(colour, texture, shape, radius, cx, cy, int(region.sum()), touches, angle, coherence,
                             _detail(shade, region & (alpha >= 0.9), cx, cy))


def _fit_shape(alpha: torch.Tensor, cx: float, cy: float, size: int) -> tuple:
    """(shape, radius) of the template overlapping the soft mask best (soft IoU), trying for
    each shape the radii near the one its area implies."""
    area = float(alpha.sum())

    def iou(shape, r):
        t = coverage(shape, r, cx, cy, size)
        return float(torch.minimum(alpha, t).sum() / torch.maximum(alpha, t).sum().clamp_min(1e-6))
    best = max((iou(shape, r), shape, r) for shape, unit_area in _UNIT_AREAS.items()
               for r in np.sqrt(area / unit_area) + RADIUS_STEPS)
    return best[1], float(best[2])


def _shade(img: np.ndarray, ci: int) -> np.ndarray:
    """(H, W): each pixel's position from the colour's full shade (0) to its dark shade (1)."""
    d = _DARK[ci] - _BRIGHT[ci]
    return np.clip(np.tensordot(d, img - _BRIGHT[ci][:, None, None], axes=1) / (d @ d), -0.5, 1.5)


def _texture(shade: np.ndarray, interior: np.ndarray) -> tuple:
    """(kind, orientation, coherence) from the shade map's structure tensor over the interior."""
    if interior.sum() < 8:
        return None, None, None
    s = shade.astype(np.float32)
    gx = cv2.Sobel(s, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(s, cv2.CV_32F, 0, 1, ksize=3) / 8
    jxx, jyy, jxy = (float((a * b)[interior].mean()) for a, b in ((gx, gx), (gy, gy), (gx, gy)))
    energy = jxx + jyy
    if energy < TEXTURE_ENERGY:
        return None, None, 0.0
    coherence = float(np.hypot(jxx - jyy, 2 * jxy) / energy)
    angle = float(0.5 * np.arctan2(2 * jxy, jxx - jyy)) % np.pi
    return TEXTURES[0] if coherence > COHERENCE else TEXTURES[1], angle, coherence


def _detail(shade: np.ndarray, solid: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """The shade map at offsets -DETAIL_REACH..DETAIL_REACH px from the centroid (bilinear),
    NaN where the sample is not wholly on the object."""
    offsets = np.arange(-DETAIL_REACH, DETAIL_REACH + 1, dtype=np.float32)
    map_x = (cx - 0.5 + offsets)[None, :].repeat(len(offsets), 0)
    map_y = (cy - 0.5 + offsets)[:, None].repeat(len(offsets), 1)
    values = cv2.remap(shade.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    on = cv2.remap(solid.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    return np.where(on > 0.999, values, np.nan)


def detail_similarity(a: TexturedDetection, b: TexturedDetection, min_pixels: int = 12) -> float:
    """Normalised cross-correlation of two detections' texture descriptors over the offsets
    both cover: 1 when the object wears the same texture in the same place relative to its
    centre, about 0 for unrelated textures. NaN when either has no descriptor or they share
    fewer than `min_pixels` samples."""
    if a.detail is None or b.detail is None:
        return float("nan")
    both = ~np.isnan(a.detail) & ~np.isnan(b.detail)
    if both.sum() < min_pixels:
        return float("nan")
    x, y = a.detail[both] - a.detail[both].mean(), b.detail[both] - b.detail[both].mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 1e-9 else float("nan")
