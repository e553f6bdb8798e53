"""The worlds the quality benchmark runs on: a toy world's model file, its clips with their
captions and edits, and a detector that reads each frame back (a detection with .x, .y (None
without an object), .touches_edge, .colour and .named, as toyworld/fidelity.py reads them;
with .detail, the textured world's, also the unnamed detail). Another world plugs in as a
`World` in WORLDS.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from toyworld import textured
from toyworld.world import Spec, make_clip
from toyworld.worlds import get_world as toy_world


@dataclass(frozen=True)
class Case:
    """One clip of a world and its prompts. make(frames) -> (frames, 3, H, W) in [-1, 1];
    edits: ((prompt, the attributes the prompt names), ...)."""
    name: str
    source_prompt: str
    source_named: tuple
    edits: tuple
    make: Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class World:
    name: str
    weights: Path
    cases: tuple
    detect: Callable            # (3, H, W) in [-1, 1] -> detection


def flat_case(path_kind: str, colour: str, shape: str, path_seed: int, edits: tuple) -> Case:
    """A large flat object along a world.path; edits as (colour, shape) pairs."""
    spec = Spec(colour, shape, "large", 0, 0)
    return Case(path_kind, spec.caption(), (colour, shape),
                tuple((Spec(c, s, "large", 0, 0).caption(), (c, s)) for c, s in edits),
                lambda frames: make_clip(path_kind, frames, spec, path_seed)[0])


def textured_case(case: textured.EditCase) -> Case:
    return Case(case.name, case.source_prompt, case.spec.named, tuple(zip(case.edit_prompts, case.edits)),
                lambda frames: case.clip(frames)[0])


# One edit per clip that per-frame editing flickers on (a blue circle) and one it does cleanly
# (toyworld/README.md); the exit path's half-visible object is left out (the model never saw one).
FLAT = World("flat", toy_world("flat").weights, (
    flat_case("zigzag", "red", "circle", 1, (("blue", "circle"), ("red", "square"))),
    flat_case("curved", "yellow", "circle", 3, (("blue", "circle"), ("yellow", "square"))),
    flat_case("speed", "blue", "square", 4, (("red", "square"), ("blue", "circle"))),
), toy_world("flat").detect)

# Textured objects over textured, panning backdrops: the texture's kind, orientation and phase
# are detail no caption names, which a per-frame edit may redraw in every frame.
TEXTURED = World("textured", toy_world("textured").weights,
                 tuple(textured_case(c) for c in textured.edit_cases(4)), toy_world("textured").detect)

WORLDS = {"flat": FLAT, "textured": TEXTURED}


def get_world(name: str) -> World:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; choose one of {tuple(WORLDS)}")
    return WORLDS[name]
