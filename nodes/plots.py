"""Plots as images (PIL, which ComfyUI ships): the tuning loss curve (raw per-step losses,
noisy as each step draws its own timestep, and their running mean) and the coherence
metrics per frame pair."""

import numpy as np
import torch

SIZE = (512, 256)
PAD = 34


def loss_curve(losses: list[float], title: str = "tuning loss"):
    """A PIL RGB image of the curve."""
    from PIL import Image, ImageDraw
    w, h = SIZE
    img = Image.new("RGB", SIZE, (24, 24, 28))
    draw = ImageDraw.Draw(img)
    draw.rectangle([PAD, 8, w - 8, h - PAD], outline=(90, 90, 100))
    draw.text((PAD, h - PAD + 6), f"{title}: {len(losses)} steps", fill=(200, 200, 210))
    if not losses:
        return img
    values = np.asarray(losses, dtype=np.float64)
    window = max(1, len(values) // 20)
    mean = np.convolve(values, np.ones(window) / window, mode="valid")
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0

    def points(vals, offset):
        xs = PAD + (np.arange(len(vals)) + offset) / max(len(values) - 1, 1) * (w - 8 - PAD)
        ys = (h - PAD) - (vals - lo) / (hi - lo) * (h - PAD - 8)
        return list(zip(xs.tolist(), ys.tolist()))

    raw = points(values, 0)
    draw.line(raw if len(raw) > 1 else raw * 2, fill=(90, 120, 170), width=1)
    smooth = points(mean, (window - 1) / 2)
    draw.line(smooth if len(smooth) > 1 else smooth * 2, fill=(255, 170, 60), width=2)
    draw.text((4, 8), f"{hi:.3g}", fill=(200, 200, 210))
    draw.text((4, h - PAD - 12), f"{lo:.3g}", fill=(200, 200, 210))
    draw.text((w - 180, h - PAD + 6), f"last mean {mean[-1]:.4f}", fill=(255, 170, 60))
    return img


PANEL = (512, 150)
SERIES_COLOURS = ((255, 170, 60), (110, 150, 210))  # the clip measured, its reference


def pair_panels(panels: list[tuple[str, list[tuple[str, np.ndarray]]]]):
    """A PIL RGB image of one panel per (title, [(label, values per frame pair)]), stacked;
    values share the panel's y axis from 0, NaN values are left out."""
    from PIL import Image, ImageDraw
    w, ph = PANEL
    img = Image.new("RGB", (w, ph * len(panels)), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels):
        top, bottom = ph * i + 22, ph * (i + 1) - 22
        draw.rectangle([PAD, top, w - 8, bottom], outline=(90, 90, 100))
        draw.text((PAD, top - 16), title, fill=(200, 200, 210))
        finite = np.concatenate([v[np.isfinite(v)] for _, v in series])
        hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        draw.text((4, top), f"{hi:.3g}", fill=(200, 200, 210))
        draw.text((4, bottom - 12), "0", fill=(200, 200, 210))
        label_x = w - 8
        for (label, values), colour in reversed(list(zip(series, SERIES_COLOURS))):
            label_x -= 8 * len(label) + 12
            draw.text((label_x, top - 16), label, fill=colour)
            xs = PAD + (np.arange(len(values)) + 0.5) / len(values) * (w - 8 - PAD)
            ys = bottom - values / hi * (bottom - top)
            points = [(x, y) for x, y in zip(xs.tolist(), ys.tolist()) if np.isfinite(y)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        n = len(series[0][1])
        draw.text((PAD, bottom + 4), f"frame pairs 1-2 ... {n}-{n + 1}", fill=(150, 150, 160))
    return img


def as_image_tensor(img) -> torch.Tensor:
    """PIL image -> ComfyUI IMAGE (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
