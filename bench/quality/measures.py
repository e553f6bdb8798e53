"""What the quality benchmark measures on one produced clip against its source: the world's
detections (toyworld/fidelity.py: track, prompted attributes) and the pack's video metrics
(vrwkv/metrics.py: track error and motion match against the source's track, warp error by
the source's flow and by the clip's own, flicker); with a detector that reads texture
(.detail), how steady the unnamed detail stays."""

import torch

from toyworld.fidelity import (as_image_batch, attribute_consistency, detail_consistency, named_fidelity, track,
                               whole_in_frame)
from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv import metrics  # noqa: E402


class Source:
    """A source clip read once: its frames, detections, track and the frames where its
    object is whole (the frames whose attributes count)."""

    def __init__(self, clip: torch.Tensor, detect):
        self.clip, self.detect = clip, detect
        self.found = [detect(f) for f in clip]
        self.track = track(self.found)
        self.whole = whole_in_frame(self.found)
        self.images = as_image_batch(clip)
        self.size = tuple(clip.shape[-2:])


def measure(frames: torch.Tensor, source: Source, named: tuple) -> dict:
    """Every measure of a produced clip against its source; `named`: the attributes its prompt names."""
    found = [source.detect(f) for f in frames]
    t = track(found)
    tracked = metrics.track_error(t, source.track, source.size)
    motion = metrics.motion_match(t, source.track, source.size)
    report = metrics.coherence_report(as_image_batch(frames), source.images).means()
    return {
        "track_px": tracked.distance, "lost": tracked.lost, "matched_px": tracked.matched,
        "displacement_px": motion.displacement, "speed": motion.speed, "source_speed": motion.reference_speed,
        "fidelity": named_fidelity(found, named, source.whole),
        "consistency": attribute_consistency(found, source.whole),
        "warp": report["warp_error"], "own_warp": report["own_warp_error"], "flicker": report["flicker"],
        "source_warp": report["source_warp_error"],
        **({"detail": detail_consistency(found, source.whole)} if hasattr(source.found[0], "detail") else {}),
    }
