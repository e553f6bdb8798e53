"""What VRWKV Video Coherence's numbers read on synthetic clips of known motion: the source
itself, an edit with the same motion, and clips broken in the ways an edit breaks
(shuffled, reversed, flickering, noisy), each measured against the source.

    python -m bench.coherence_levels

Two sources, each at 32 and 64 px (8 frames): the metric tests' clips (tests/clips.py), a
randomly textured square moving 2 px right and 1 px down per frame (twice that at 64 px) over
a smooth background, and a clip textured everywhere, a striped red disc moving over two
grey gratings that pan. Writes bench/results/coherence_levels.md (docs/nodes.md shows its first table).
"""

import sys
from pathlib import Path

import numpy as np

from . import load_pack, machine_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clips import moving_clip, shuffled, textured_clip  # noqa: E402  (the metric tests' clips)

load_pack()
from vrwkv_editor.vrwkv.metrics import coherence_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (  # (report field, header, format)
    ("warp_error", "warp error", "{:.4f}"),
    ("own_warp_error", "own warp error", "{:.4f}"),
    ("warp_unreliable", "own flow unreliable", "{:.2f}"),
    ("flicker", "flicker", "{:.4f}"),
    ("motion_epe", "motion EPE px", "{:.2f}"),
)


def variants(source: np.ndarray, moving: np.ndarray) -> dict:
    """The edited clips of the table, made from `source` ((T, H, W) `moving`: its moving object)."""
    rng = np.random.default_rng(1)
    flat = source.copy()
    flat[moving] = (0.9, 0.1, 0.1)
    return {
        "the source itself": source,
        "recoloured (RGB -> BGR), same motion": source[..., ::-1].copy(),
        "the object flat red, same motion": flat,
        "frames shuffled": shuffled(source),
        "motion reversed": source[::-1].copy(),
        "brightness x0.7 on every 2nd frame": source * np.where(np.arange(len(source)) % 2, 1.0, 0.7)[:, None, None, None],
        "Gaussian noise (sigma 0.1) added": np.clip(source + rng.normal(0, 0.1, source.shape), 0, 1),
    }


def measure(edited: np.ndarray, source: np.ndarray) -> dict:
    report = coherence_report(edited.astype(np.float32), source)
    means = report.means()
    means["warp_unreliable"] = 1 - means["own_warp_reliable"]
    return means


def main():
    def square(size):     # the object: where another texture seed changes the clip
        step = (2 * size // 32, size // 32)
        clip = moving_clip(size, step=step)
        return clip, np.abs(clip - moving_clip(size, step=step, seed=1)).sum(-1) > 0

    def disc(size):       # the object: the only saturated pixels
        clip = textured_clip(size, step=(2 * size // 32, size // 32), pan=(size // 32, 0))
        return clip, clip.max(-1) - clip.min(-1) > 0.3

    sources = {"textured square, smooth background": square, "striped disc over panning gratings": disc}
    lines = ["# VRWKV Video Coherence on synthetic clips", "",
             f"Machine: {machine_name('cpu')}. `python -m bench.coherence_levels`; every clip 8 frames, measured "
             "against its source. Each cell: 32 px / 64 px.", "",
             "warp error: the edit warped by the source's flow over the source's reliable pixels (Lai et al.); own "
             "warp error: by the edit's own flow over every pixel (the measure without a source); own flow "
             "unreliable: share of pixels whose own flow fails the forward-backward check."]
    for name, make in sources.items():
        rows = {}
        for size in (32, 64):
            clip, moving = make(size)
            rows[size] = {label: measure(edited, clip) for label, edited in variants(clip, moving).items()}
        lines += ["", f"## {name}", "", "| edited clip | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for label in rows[32]:
            cells = [" / ".join(fmt.format(rows[size][label][key]) for size in (32, 64)) for key, _, fmt in COLUMNS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "coherence_levels.md"
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)


if __name__ == "__main__":
    main()
