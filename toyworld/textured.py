"""The textured toy world: a named, textured object over unnamed detail, 32x32 RGB in [-1, 1].

Captions name two things of the main object, its colour (world.COLOURS) and shape
(world.SHAPES), as in "a red circle". Everything else is detail the caption does not name,
so a model draws it freely and a per-frame edit may draw it differently in every frame:
- the object's texture: its kind (stripes or a lattice of spots, the colour's dark shade
  over the full colour), orientation, period and phase, fixed to the object so that it
  moves with it; and the object's size (a continuous radius);
- the backdrop: a low-chroma tone with two gratings and a gradient, a function of world
  coordinates so that a camera pan shifts it;
- 0-3 distractors: small light or dark grey shapes, fixed in the world (they pan with the
  backdrop), drawn behind the main object.
The object is the only saturated thing in the image: its chroma is >= 0.9 where the
backdrop's and the distractors' stay under 0.2, which is how the detector finds it on a
backdrop it does not know (textured_detector.py). Rendering uses world.py's sub-pixel
grid, shapes and paths.
"""

import math
from dataclasses import dataclass, replace

import torch

from .world import COLOURS, SHAPES, SIZE, downsample, inside, path, subpixels

TEXTURES = ("striped", "spotted")
VOCAB = ("<pad>", "a", *COLOURS, *SHAPES)      # captions: "a red circle"
TOKENS = 3
RADIUS = (6.5, 9.0)             # main object's radius (half side, half base), pixels
PERIOD = (4.5, 6.0)             # stripe period / spot spacing, pixels
SPOT_RADIUS = 0.3               # of the spacing
DARK = (0.55, -0.45)            # the texture's dark shade of colour c: 0.55 c - 0.45
DISTRACTOR_RADIUS = (1.8, 3.0)
DISTRACTOR_LEVELS = ((0.55, 0.85), (-0.95, -0.8))   # light or dark grey
TONE = (-0.45, 0.05)            # backdrop grey level
TINT = 0.05                     # backdrop's largest per-channel tint
GRATING = ((6.0, 14.0), (0.05, 0.12))   # backdrop gratings: period, amplitude
GRADIENT = 0.15                 # backdrop gradient: largest change across the frame


@dataclass(frozen=True)
class Backdrop:
    tone: tuple                  # (r, g, b)
    gratings: tuple              # ((angle rad, period px, phase rad, amplitude), ...)
    gradient: tuple              # (angle rad, change across the frame)


@dataclass(frozen=True)
class Distractor:
    shape: str
    radius: float
    x: float                     # world coordinates: image position + pan
    y: float
    level: float                 # grey level in [-1, 1]


@dataclass(frozen=True)
class TexturedSpec:
    colour: str
    texture: str
    shape: str
    x: float                     # centre (area centroid), image pixels
    y: float
    radius: float = 7.0
    angle: float = 0.0           # texture orientation, radians (stripes' normal, lattice axis)
    period: float = 5.5
    phase: tuple = (0.0, 0.0)    # texture phase along its two axes, cycles
    backdrop: Backdrop = Backdrop((-0.2, -0.2, -0.2), (), (0.0, 0.0))
    distractors: tuple = ()
    pan: tuple = (0.0, 0.0)      # the camera's offset: image pixel p shows world point p + pan

    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    @property
    def named(self) -> tuple:
        """What the caption names: (colour, shape)."""
        return self.colour, self.shape


def dark_shade(colour: str) -> torch.Tensor:
    return DARK[0] * torch.tensor(COLOURS[colour]) + DARK[1]


def texture_map(texture: str, angle: float, period: float, phase: tuple, du: torch.Tensor,
                dv: torch.Tensor) -> torch.Tensor:
    """Share of the dark shade at offsets (du, dv) from the object's centre: flat-topped stripes
    (half dark) or round spots of radius SPOT_RADIUS * period on a square lattice."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose one of {TEXTURES}")
    u = (du * math.cos(angle) + dv * math.sin(angle)) / period + phase[0]
    if texture == "striped":
        return (0.5 + torch.cos(2 * math.pi * u)).clamp(0, 1)
    v = (-du * math.sin(angle) + dv * math.cos(angle)) / period + phase[1]
    d = torch.sqrt((u - u.round()) ** 2 + (v - v.round()) ** 2) * period     # px to the nearest spot centre
    return (0.5 - (d - SPOT_RADIUS * period) / 0.8).clamp(0, 1)


def backdrop_map(b: Backdrop, wx: torch.Tensor, wy: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(3, ...) backdrop colour at world points (wx, wy)."""
    grey = torch.zeros_like(wx)
    for angle, period, phase, amplitude in b.gratings:
        grey = grey + amplitude * torch.cos(2 * math.pi * (wx * math.cos(angle) + wy * math.sin(angle)) / period + phase)
    angle, change = b.gradient
    grey = grey + change * ((wx - size / 2) * math.cos(angle) + (wy - size / 2) * math.sin(angle)) / size
    return torch.tensor(b.tone)[:, None, None] + grey[None]


def render(spec: TexturedSpec, size: int = SIZE) -> torch.Tensor:
    """(3, size, size) image in [-1, 1]."""
    if spec.colour not in COLOURS:
        raise ValueError(f"unknown colour {spec.colour!r}; choose one of {tuple(COLOURS)}")
    py, px = subpixels(size)
    image = backdrop_map(spec.backdrop, px + spec.pan[0], py + spec.pan[1], size)
    for d in spec.distractors:
        alpha = inside(d.shape, d.radius, px + spec.pan[0] - d.x, py + spec.pan[1] - d.y).float()
        image = image * (1 - alpha) + d.level * alpha
    du, dv = px - spec.x, py - spec.y
    alpha = inside(spec.shape, spec.radius, du, dv).float()
    dark = texture_map(spec.texture, spec.angle, spec.period, spec.phase, du, dv)
    bright = torch.tensor(COLOURS[spec.colour])[:, None, None]
    colour = bright * (1 - dark) + dark_shade(spec.colour)[:, None, None] * dark
    return downsample(image * (1 - alpha) + colour * alpha).clamp(-1, 1)


def random_backdrop(generator: torch.Generator) -> Backdrop:
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand(1, generator=generator))
    grey = u(*TONE)
    tone = tuple(grey + u(-TINT, TINT) for _ in range(3))
    gratings = tuple((u(0, math.pi), u(*GRATING[0]), u(0, 2 * math.pi), u(*GRATING[1])) for _ in range(2))
    return Backdrop(tone, gratings, (u(0, 2 * math.pi), u(-GRADIENT, GRADIENT)))


def random_specs(generator: torch.Generator, n: int, size: int = SIZE) -> list:
    """n random scenes with the whole main object inside the frame."""
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    def u(lo, hi):
        return lo + (hi - lo) * float(torch.rand(1, generator=generator))
    specs = []
    for _ in range(n):
        colour, texture, shape = pick(tuple(COLOURS)), pick(TEXTURES), pick(SHAPES)
        radius = u(*RADIUS)
        margin = radius * 4 / 3 + 1
        x, y = u(margin, size - margin), u(margin, size - margin)
        distractors = tuple(
            Distractor(pick(SHAPES), u(*DISTRACTOR_RADIUS), u(0, size), u(0, size), u(*pick(DISTRACTOR_LEVELS)))
            for _ in range(int(torch.randint(4, (1,), generator=generator))))
        specs.append(TexturedSpec(colour, texture, shape, x, y, radius, u(0, math.pi), u(*PERIOD),
                                  (u(0, 1), u(0, 1)), random_backdrop(generator), distractors))
    return specs


def make_clip(path_kind: str, frames: int, spec: TexturedSpec, seed: int, pan: tuple = (0.0, 0.0),
              spin: float = 0.0, size: int = SIZE):
    """(frames, 3, size, size) clip of `spec`'s object moving along a world.path, its texture
    fixed to it (turning by `spin` radians per frame), while the camera pans by `pan` pixels
    per frame (backdrop and distractors shift by -pan); and the true track (frames, 2) of the
    object's centres. spec.x / spec.y are ignored, spec.pan is the first frame's offset."""
    track = path(path_kind, frames, seed, size)
    clip = torch.stack([
        render(replace(spec, x=float(x), y=float(y), angle=spec.angle + spin * i,
                       pan=(spec.pan[0] + pan[0] * i, spec.pan[1] + pan[1] * i)), size)
        for i, (x, y) in enumerate(track.tolist())])
    return clip, track


@dataclass(frozen=True)
class EditCase:
    """One clip of the edit track and its edits: `spec`'s object along a world.path while the
    camera pans by `pan` px per frame; each edit changes one named attribute (colour or shape)."""
    name: str
    spec: TexturedSpec
    path_kind: str
    path_seed: int
    pan: tuple
    edits: tuple                 # ((colour, shape), ...)

    def clip(self, frames: int = 8):
        """(clip (frames, 3, 32, 32), true track (frames, 2))."""
        return make_clip(self.path_kind, frames, self.spec, self.path_seed, self.pan)

    @property
    def source_prompt(self) -> str:
        return self.spec.caption()

    @property
    def edit_prompts(self) -> list:
        return [replace(self.spec, colour=c, shape=s).caption() for c, s in self.edits]


def edit_cases(count: int = 4, seed: int = 0) -> list:
    """The edit track's clips: colours, textures, shapes and path kinds in turn, the unnamed
    detail (texture orientation, period and phase, backdrop, distractors) drawn from `seed`,
    object radius 7.5; the camera pans on every second clip. Edits: the next palette colour,
    and the next shape."""
    kinds = ("straight", "curved", "zigzag", "speed")
    colours = tuple(COLOURS)
    cases = []
    for i, spec in enumerate(random_specs(torch.Generator().manual_seed(seed), count)):
        spec = replace(spec, colour=colours[i % len(colours)], texture=TEXTURES[i % len(TEXTURES)],
                       shape=SHAPES[i % len(SHAPES)], radius=7.5)
        pan = (0.6, -0.4) if i % 2 else (0.0, 0.0)
        edits = ((colours[(colours.index(spec.colour) + 1) % len(colours)], spec.shape),
                 (spec.colour, SHAPES[(SHAPES.index(spec.shape) + 1) % len(SHAPES)]))
        cases.append(EditCase(f"{kinds[i % len(kinds)]}{i}", spec, kinds[i % len(kinds)], seed * 100 + i, pan, edits))
    return cases
