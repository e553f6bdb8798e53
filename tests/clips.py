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
