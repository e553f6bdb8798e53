"""Synthetic clips of known motion shared by the metric and node tests: a randomly textured
square translated by a fixed number of pixels per frame over a smooth static background."""

import numpy as np

STEP = (2, 1)  # px per frame (x, y)


def moving_clip(size=32, frames=8, step=STEP, seed=0):
    rng = np.random.default_rng(seed)
    side = size // 3
    texture = rng.random((side, side, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    background = np.stack([0.2 + 0.3 * xx, 0.2 + 0.3 * yy, 0.4 + 0 * xx], -1).astype(np.float32)
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        x, y = 2 + t * step[0], 2 + t * step[1]
        clip[t, y : y + side, x : x + side] = texture
    return clip


def shuffled(clip):
    return clip[[0, 5, 2, 7, 1, 4, 6, 3]]


def flickering(clip):
    return clip * np.where(np.arange(len(clip)) % 2, 1.0, 0.7).astype(np.float32)[:, None, None, None]


def textured_clip(size=32, frames=8, step=STEP, pan=(1, 0)):
    """Texture everywhere: a striped red disc moving `step` px per frame over a backdrop of
    two grey gratings that pans by `pan` px per frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    clip = []
    for t in range(frames):
        wx, wy = xx + pan[0] * t, yy + pan[1] * t
        grey = 0.45 + 0.1 * np.cos(2 * np.pi * (0.8 * wx + 0.6 * wy) / 7) + 0.08 * np.cos(2 * np.pi * (0.95 * wy - 0.3 * wx) / 11)
        frame = np.stack([grey, 0.95 * grey, 1.05 * grey], -1)
        du, dv = xx - 9 - step[0] * t, yy - 9 - step[1] * t
        stripes = np.clip(0.5 + np.cos(2 * np.pi * 0.7 * (du + dv) / 5), 0, 1)[..., None]
        disc = np.array([0.95, 0.1, 0.1]) * (1 - stripes) + np.array([0.5, 0.05, 0.05]) * stripes
        clip.append(np.where((du ** 2 + dv ** 2 <= 7.5 ** 2)[..., None], disc, frame))
    return np.stack(clip).astype(np.float32)
