"""Tables and the picture strip from the units' records (run.py).

A unit (one method x clip x tuning seed x frame count) is the statistical unit: its value is
the mean over its sampling seeds and prompts. A cell is the mean over units with a 95%
Student-t interval over them; paired rows give a method's difference from a reference unit
by unit (same clip and tuning seed; an untuned reference has one unit per clip), and a
difference counts only when its interval excludes 0.
"""

import numpy as np
from PIL import Image, ImageDraw

from .run import cached_images

# two-sided 95% Student t quantiles by degrees of freedom (beyond 30: 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ci95(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval) of finite values; half-width NaN below 2 values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96
    return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v)))


def fmt(mean: float, half: float, pattern: str) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return pattern.format(mean) + ("" if not np.isfinite(half) else " ± " + pattern.format(half))


def unit_value(record: dict, key: str, **select) -> float:
    """A unit's mean of `key` over its rows matching `select` (NaN if none)."""
    values = [r[key] for r in record["rows"] if all(r.get(k) == v for k, v in select.items())
              and r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


HEADLINE = {"track": "generation", "role": "source", "noise": "independent"}
GENERATION = [  # (header, key, selection, format)
    ("track error px ↓", "track_px", HEADLINE, "{:.2f}"),
    ("lost share", "lost", HEADLINE, "{:.2f}"),
    ("displacement error px ↓", "displacement_px", HEADLINE, "{:.2f}"),
    ("speed px/frame", "speed", HEADLINE, "{:.2f}"),
    ("source speed", "source_speed", HEADLINE, "{:.2f}"),
    ("attribute consistency ↑", "consistency", HEADLINE, "{:.2f}"),
    ("warp error, source's flow ↓", "warp", HEADLINE, "{:.4f}"),
    ("own warp error ↓", "own_warp", HEADLINE, "{:.4f}"),
    ("edit prompts: track error px ↓", "track_px", {"track": "generation", "role": "edit", "noise": "independent"},
     "{:.2f}"),
    ("edit prompts: fidelity ↑", "fidelity", {"track": "generation", "role": "edit", "noise": "independent"}, "{:.2f}"),
    ("shared noise: track error px ↓", "track_px", {"track": "generation", "role": "source", "noise": "shared"},
     "{:.2f}"),
]
EDIT = [
    ("edit fidelity ↑", "fidelity", {"track": "edit"}, "{:.2f}"),
    ("attribute consistency ↑", "consistency", {"track": "edit"}, "{:.2f}"),
    ("track error px ↓", "track_px", {"track": "edit"}, "{:.2f}"),
    ("warp error, source's flow ↓", "warp", {"track": "edit"}, "{:.4f}"),
    ("own warp error ↓", "own_warp", {"track": "edit"}, "{:.4f}"),
    ("flicker ↓", "flicker", {"track": "edit"}, "{:.4f}"),
    ("detail consistency ↑", "detail", {"track": "edit"}, "{:.3f}"),
    ("reconstruction PSNR dB ↑", "recon_psnr", {"track": "edit"}, "{:.1f}"),
]
# the edit track's temporal measures, compared unit by unit (paired_table)
EDIT_TEMPORAL = [c for c in EDIT if c[1] in ("consistency", "warp", "own_warp", "flicker", "detail")]


def by_method(records: list, specs: list, frames: int) -> dict:
    return {s: [r for r in records if r["spec"] == s and r["frames"] == frames] for s in specs}


def measured(groups: dict, columns: list) -> list:
    """The columns some unit measured (a world without texture has no detail consistency)."""
    return [c for c in columns if any(c[1] in row for rs in groups.values() for r in rs for row in r["rows"])]


def table(groups: dict, columns: list, extra: bool = True) -> list:
    columns = measured(groups, columns)
    lines = ["| method | units | " + " | ".join(h for h, *_ in columns) + (" | tuning s | output change |" if extra
                                                                             else " |"),
             "|---|---|" + "---|" * (len(columns) + (2 if extra else 0))]
    for spec, rs in groups.items():
        if not rs:
            continue
        cells = [fmt(*ci95([unit_value(r, key, **sel) for r in rs]), f) for _, key, sel, f in columns]
        if extra:
            cells += [f"{np.mean([r['tune_s'] for r in rs]):.0f}", f"{np.mean([r['moved'] for r in rs]):.1e}"]
        lines.append(f"| {rs[0]['method']} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines


def differences(groups: dict, reference: str, spec: str, key: str, sel: dict) -> list:
    """`spec`'s units minus `reference`'s, unit by unit (matched on clip and tuning seed, or on
    clip alone when the reference has one unit per clip)."""
    ref = groups.get(reference) or []
    diffs = []
    for r in groups.get(spec) or []:
        match = [q for q in ref if q["case"] == r["case"] and q["tune_seed"] == r["tune_seed"]] or \
                [q for q in ref if q["case"] == r["case"] and q["kind"] == "plain"]
        if match:
            diffs.append(unit_value(r, key, **sel) - unit_value(match[0], key, **sel))
    return diffs


def verdict(mean: float, half: float) -> str:
    return "no difference shown" if not np.isfinite(half) or abs(mean) <= half else (
        "lower" if mean < 0 else "higher")


def paired(groups: dict, reference: str, key: str, sel: dict, pattern: str) -> list:
    """Each method minus `reference` on one measure, with the interval's verdict."""
    ref = groups.get(reference) or []
    if not ref:
        return []
    lines = [f"| method | units | {key} minus {ref[0]['method']} [95% CI] | verdict |", "|---|---|---|---|"]
    for spec, rs in groups.items():
        if spec == reference or not rs:
            continue
        diffs = differences(groups, reference, spec, key, sel)
        mean, half = ci95(diffs)
        lines.append(f"| {rs[0]['method']} | {len(diffs)} | {fmt(mean, half, pattern)} | {verdict(mean, half)} |")
    return lines


def paired_table(groups: dict, reference: str, columns: list) -> list:
    """Each method minus `reference` on several measures; a cell whose interval excludes 0 is
    marked with the side it falls on (lower / higher: read with the column's arrow)."""
    ref = groups.get(reference) or []
    columns = measured(groups, columns)
    if not ref:
        return []
    lines = [f"| method minus {ref[0]['method']} | units | " + " | ".join(h for h, *_ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for spec, rs in groups.items():
        if spec == reference or not rs:
            continue
        cells, n = [], 0
        for _, key, sel, pattern in columns:
            diffs = differences(groups, reference, spec, key, sel)
            mean, half = ci95(diffs)
            v = verdict(mean, half)
            cells.append(fmt(mean, half, pattern) + ("" if v == "no difference shown" else f" **{v}**"))
            n = max(n, len(diffs))
        lines.append(f"| {rs[0]['method']} | {n} | " + " | ".join(cells) + " |")
    return lines


def per_clip(groups: dict, key: str, sel: dict, pattern: str) -> list:
    cases = list(dict.fromkeys(r["case"] for rs in groups.values() for r in rs))
    lines = ["| method | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for spec, rs in groups.items():
        if rs:
            cells = [fmt(np.mean([unit_value(r, key, **sel) for r in rs if r["case"] == c] or [np.nan]), np.nan,
                         pattern) for c in cases]
            lines.append(f"| {rs[0]['method']} | " + " | ".join(cells) + " |")
    return lines


def write_strip(records: list, specs: list, cache, path, case: str, frames: int, scale: int = 3) -> None:
    """Rows: the source clip, then per method its first generation sample of the source prompt
    (independent noise) and its edit of the first edit prompt; every frame, upscaled."""
    rows = []
    for spec in specs:
        record = next((r for r in records if r["spec"] == spec and r["case"] == case and r["frames"] == frames), None)
        images = cached_images(cache, record["key"]) if record else None
        if images is None:
            continue
        if not rows:
            rows.append((f"source ({case}, {frames} frames)", images["source"]))
        for prefix in ("generation independent", "edit"):
            name = next((n for n in images if n.startswith(prefix)), None)
            if name is not None:
                rows.append((f"{record['method']}: {name}", images[name]))
    if not rows:
        return
    t, _, h, w = rows[0][1].shape
    label_h = 14
    canvas = Image.new("RGB", (t * w * scale, len(rows) * (h * scale + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, clip) in enumerate(rows):
        top = i * (h * scale + label_h)
        draw.text((2, top + 1), label, fill="black")
        pixels = ((clip.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for j, frame in enumerate(pixels):
            canvas.paste(Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST),
                         (j * w * scale, top + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(path)
