"""The toy worlds by name, each with what training, evaluation and the benchmarks need of it:
its caption vocabulary, random scenes, renderer, captions, detector and model file.

- "flat": one flat-coloured shape on a fixed grey gradient (world.py, detector.py); the
  committed weights/toy_unet.safetensors.
- "textured": a textured object over a textured backdrop with distractors (textured.py,
  textured_detector.py); weights/toy_unet_textured.safetensors.
A scene's `named` attributes are what its caption names; an image adheres to its caption
when the detector reads them back (`adheres`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import detector, textured, textured_detector, world
from .text import TOKENS, VOCAB

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class World:
    name: str
    vocab: tuple                 # "<pad>" first
    tokens: int
    random_specs: Callable       # (generator, n) -> n scenes
    render: Callable             # scene -> (3, 32, 32) in [-1, 1]
    caption: Callable            # (scene, variant: bool) -> caption; the flat world drops the size word when False
    detect: Callable             # (3, H, W) image -> detection with .named, .x, .y, .touches_edge
    weights: Path

    def adheres(self, spec, image) -> bool:
        return self.detect(image).named == spec.named


WORLDS = {
    "flat": World("flat", VOCAB, TOKENS, world.random_specs, world.render, lambda s, full: s.caption(full),
                  detector.detect, WEIGHTS_DIR / "toy_unet.safetensors"),
    "textured": World("textured", textured.VOCAB, textured.TOKENS, textured.random_specs, textured.render,
                      lambda s, full: s.caption(), textured_detector.detect,
                      WEIGHTS_DIR / "toy_unet_textured.safetensors"),
}


def get_world(name: str) -> World:
    if name not in WORLDS:
        raise ValueError(f"unknown toy world {name!r}; choose one of {tuple(WORLDS)}")
    return WORLDS[name]
