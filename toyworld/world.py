"""The toy world: one coloured shape on a fixed soft-gradient background, 32x32 RGB in [-1, 1].

A scene is a `Spec` (colour, shape, size, centre). Shapes are 4x4-supersampled (anti-aliased
edges are easier to learn) and centred on their area centroid, which a detector's mask
centroid recovers. Clips move the object along a path, which may leave the frame.
"""

import math
from dataclasses import dataclass, replace

import torch

SIZE = 32
COLOURS = {  # well separated in RGB, far from the grey background
    "red": (0.9, -0.8, -0.8),
    "green": (-0.8, 0.8, -0.8),
    "blue": (-0.8, -0.6, 0.9),
    "yellow": (0.9, 0.9, -0.8),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5.0, "large": 8.0}   # radius, half side, half base (pixels)
PATH_KINDS = ("straight", "curved", "zigzag", "speed", "exit")
_SUPER = 4


@dataclass(frozen=True)
class Spec:
    colour: str
    shape: str
    size: str
    x: float
    y: float

    def caption(self, with_size: bool = True) -> str:
        words = ["a", self.size, self.colour, self.shape] if with_size else ["a", self.colour, self.shape]
        return " ".join(words)

    @property
    def named(self) -> tuple:
        """What the detector must read back for the image to adhere: (colour, shape)."""
        return self.colour, self.shape


def background(size: int = SIZE) -> torch.Tensor:
    """(3, size, size): a soft vertical grey gradient, the same in every image."""
    ramp = torch.linspace(-0.65, -0.35, size)
    return ramp[None, :, None].expand(3, size, size).clone()


def subpixels(size: int = SIZE) -> tuple:
    """(py, px), each (size * 4, size * 4): the centres of a 4x4 grid of sub-pixels per pixel,
    in pixel coordinates. Renderers draw at sub-pixels and `downsample` averages them, which
    anti-aliases edges and fine texture alike."""
    c = (torch.arange(size * _SUPER, dtype=torch.float32) + 0.5) / _SUPER
    return torch.meshgrid(c, c, indexing="ij")


def downsample(x: torch.Tensor) -> torch.Tensor:
    """(..., size * 4, size * 4) sub-pixel values -> (..., size, size) pixel means."""
    h, w = x.shape[-2] // _SUPER, x.shape[-1] // _SUPER
    return x.reshape(*x.shape[:-2], h, _SUPER, w, _SUPER).mean(dim=(-3, -1))


def inside(shape: str, radius: float, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Which points at offsets (dx, dy) from the shape's centre (area centroid) it covers."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (dx.abs() <= radius) & (dy.abs() <= radius)
    # isosceles, apex up, base 2r, height 2r; its centroid lies a third up from the base
    from_apex = dy + 4 * radius / 3
    return (from_apex >= 0) & (from_apex <= 2 * radius) & (dx.abs() <= from_apex / 2)


def coverage(shape: str, radius: float, x: float, y: float, size: int = SIZE) -> torch.Tensor:
    """(size, size) share of each pixel covered by the shape centred (area centroid) at x, y."""
    py, px = subpixels(size)
    return downsample(inside(shape, radius, px - x, py - y).float())


def render(spec: Spec, size: int = SIZE) -> torch.Tensor:
    """(3, size, size) image in [-1, 1]."""
    if spec.colour not in COLOURS:
        raise ValueError(f"unknown colour {spec.colour!r}; choose one of {tuple(COLOURS)}")
    if spec.size not in SIZES:
        raise ValueError(f"unknown size {spec.size!r}; choose one of {tuple(SIZES)}")
    alpha = coverage(spec.shape, SIZES[spec.size], spec.x, spec.y, size)
    colour = torch.tensor(COLOURS[spec.colour])[:, None, None]
    return background(size) * (1 - alpha) + colour * alpha


def random_specs(generator: torch.Generator, n: int, size: int = SIZE) -> list:
    """n random scenes with the whole object inside the frame."""
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]
    specs = []
    for _ in range(n):
        colour, shape, sz = pick(tuple(COLOURS)), pick(SHAPES), pick(tuple(SIZES))
        margin = SIZES[sz] * 4 / 3 + 1
        x, y = (margin + torch.rand(2, generator=generator) * (size - 2 * margin)).tolist()
        specs.append(Spec(colour, shape, sz, x, y))
    return specs


def path(kind: str, frames: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """(frames, 2) centre positions (x, y) in pixels along a path of the given kind.

    straight: constant velocity; curved: an arc; zigzag: straight with a triangle-wave
    sideways swing; speed: straight, slow then fast; exit: leaves the frame and comes back."""
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown path kind {kind!r}; choose one of {PATH_KINDS}")
    if not 2 <= frames <= 256:
        raise ValueError(f"frames must be within 2..256, got {frames}")
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, frames)
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    d = torch.tensor([math.cos(angle), math.sin(angle)])
    normal = torch.tensor([-d[1], d[0]])
    mid = size / 2
    span = 0.45 * size
    if kind == "straight":
        offsets = (s - 0.5)[:, None] * span * d
    elif kind == "curved":
        theta = (s - 0.5) * math.pi * 0.9
        offsets = (torch.sin(theta)[:, None] * d + (1 - torch.cos(theta))[:, None] * normal - 0.3 * normal) * span * 0.6
    elif kind == "zigzag":
        swing = 2 * torch.abs(2 * ((s * 2) % 1) - 1) - 1     # triangle wave in [-1, 1], two periods
        offsets = (s - 0.5)[:, None] * span * d + swing[:, None] * 0.12 * size * normal
    elif kind == "speed":
        offsets = (s * s - 0.5)[:, None] * span * d
    else:  # exit: from near the centre out through one edge (wholly outside) and back along the same line
        near, reach = 6.0, 0.5 * size + SIZES["large"] * 4 / 3 + 1
        offsets = (near + (reach - near) * torch.sin(s * math.pi))[:, None] * d
    return mid + offsets


def make_clip(path_kind: str, frames: int, spec: Spec, seed: int, size: int = SIZE):
    """(frames, 3, size, size) clip of `spec`'s object moving along a path, and its true track
    (frames, 2) of centres (x, y); spec.x / spec.y are ignored."""
    track = path(path_kind, frames, seed, size)
    clip = torch.stack([render(replace(spec, x=float(x), y=float(y)), size) for x, y in track.tolist()])
    return clip, track
