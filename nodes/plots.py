"""The loss curve as an image (PIL, which ComfyUI ships): raw per-step losses (noisy: each
step draws its own timestep) and their running mean."""

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


def as_image_tensor(img) -> torch.Tensor:
    """PIL image -> ComfyUI IMAGE (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
