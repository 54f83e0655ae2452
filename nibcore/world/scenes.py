"""Ground-truth synthetic world for the bundled mini CLIP.

Each scene is a 64×64 RGB image of 1–3 non-overlapping objects on a textured grey background,
fully determined by an integer seed. An object is a "<colour> <kind>" pair. The kinds differ by
*patch-local appearance* (so that a small from-scratch ViT with 8-px patches can learn them), not
only by outline:

- ``circle``: a solid filled disc;
- ``ring``:   a hollow circle, a 2–3 px outline;
- ``grid``:   a square lattice of 1-px lines every 4 px;
- ``ladder``: two vertical rails joined by 2-px horizontal rungs every 5 px;
- ``cross``:  a diagonal cross (×) of two 3-px strokes.

Objects are drawn without anti-aliasing, so every pixel is either object or background and the
per-object masks are exact: ``image == background`` outside all masks and ``image != background``
(in at least one channel) inside each mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from PIL import Image

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
SHAPES: tuple[str, ...] = ("circle", "ring", "grid", "ladder", "cross")
IMAGE_SIZE: int = 64

#: Seeds used for training scenes and seeds reserved for evaluation; disjoint by construction.
TRAIN_SEEDS = range(0, 100_000_000)
HELDOUT_SEEDS = range(1_000_000_000, 1_001_000_000)

_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 60, 230),
    "yellow": (235, 215, 30),
    "purple": (150, 40, 200),
    "white": (250, 250, 250),
}
_COLOUR_JITTER = 15
# Half-extent (px) of an object by number of objects in the scene: (min, max) inclusive.
_HALF_EXTENT = {1: (11, 16), 2: (9, 14), 3: (8, 12)}
_GAP = 2


@dataclass
class Scene:
    """One rendered scene. ``masks[k]`` is the (H, W) bool mask of ``objects[k]``."""

    seed: int
    image: Image.Image
    masks: np.ndarray
    objects: list[str]
    colours: list[str]
    shapes: list[str]
    background: Image.Image
    caption: str

    def caption_for(self, indices: Sequence[int]) -> str:
        """Caption naming only the objects at ``indices`` (in that order)."""
        if len(indices) == 0:
            raise ValueError("indices must name at least one object")
        return caption_of([self.objects[i] for i in indices])

    def negative(
        self,
        index: int,
        kind: Literal["colour", "shape"],
        rng_or_seed: np.random.Generator | int,
    ) -> str:
        """A "<colour> <shape>" phrase absent from the scene that differs from ``objects[index]``
        only in colour (``kind="colour"``) or only in shape (``kind="shape"``)."""
        rng = (
            rng_or_seed
            if isinstance(rng_or_seed, np.random.Generator)
            else np.random.default_rng(rng_or_seed)
        )
        colour, shape = self.colours[index], self.shapes[index]
        present = set(self.objects)
        if kind == "colour":
            options = [f"{c} {shape}" for c in COLOURS if c != colour]
        elif kind == "shape":
            options = [f"{colour} {s}" for s in SHAPES if s != shape]
        else:
            raise ValueError(f"kind must be 'colour' or 'shape', got {kind!r}")
        options = [p for p in options if p not in present]
        return options[int(rng.integers(len(options)))]

    def occluded(self, index: int) -> Image.Image:
        """The scene image with object ``index``'s mask filled with the background."""
        img = np.array(self.image)
        img[self.masks[index]] = np.array(self.background)[self.masks[index]]
        return Image.fromarray(img)


def caption_of(phrases: Sequence[str]) -> str:
    """ "a red circle", "a red circle and a blue ring",
    "a red circle, a blue ring and a green grid"."""
    parts = [f"a {p}" for p in phrases]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def phrases() -> list[str]:
    """All ``len(COLOURS) * len(SHAPES)`` "<colour> <shape>" phrases, colour-major."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def colour_rgb(colour: str) -> tuple[int, int, int]:
    """The nominal RGB of a colour name (objects are drawn with a small seeded jitter around
    it)."""
    if colour not in _RGB:
        raise ValueError(f"unknown colour {colour!r}; choose one of {list(COLOURS)}")
    return _RGB[colour]


def _shape_mask(shape: str, h: int, rng: np.random.Generator) -> np.ndarray:
    """(2h+1, 2h+1) bool footprint of one object with half-extent ``h``."""
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    rr = np.sqrt(yy**2 + xx**2)
    if shape == "circle":
        return rr <= h + 0.3
    if shape == "ring":
        width = int(rng.integers(2, 4))
        return (rr <= h + 0.3) & (rr > h + 0.3 - width)
    if shape == "grid":
        y0, x0 = yy + h, xx + h
        return (y0 % 4 == 0) | (x0 % 4 == 0) | (y0 == 2 * h) | (x0 == 2 * h)
    if shape == "ladder":
        rail = (np.abs(xx) >= (2 * h) // 3 - 1) & (np.abs(xx) <= (2 * h) // 3)
        rungs = ((yy + h) % 5 < 2) & (np.abs(xx) <= (2 * h) // 3)
        return rail | rungs
    if shape == "cross":
        return (np.abs(yy - xx) <= 1) | (np.abs(yy + xx) <= 1)
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 grey background: a linear gradient plus fixed pixel noise."""
    s = IMAGE_SIZE
    base = rng.uniform(90, 160)
    gy, gx = rng.uniform(-20, 20, size=2)
    ramp = np.linspace(-1, 1, s)
    grey = base + gy * ramp[:, None] + gx * ramp[None, :]
    tint = rng.uniform(-8, 8, size=3)
    bg = grey[:, :, None] + tint[None, None, :] + rng.normal(0, 4, size=(s, s, 3))
    return np.clip(np.round(bg), 0, 255).astype(np.uint8)


def _place(halves: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Centres (y, x) of non-overlapping boxes with the given half-extents, gap ``_GAP`` px."""
    for _ in range(1000):
        centres: list[tuple[int, int]] = []
        for h in halves:
            y, x = (int(v) for v in rng.integers(h, IMAGE_SIZE - h, size=2))
            if all(
                abs(y - cy) > h + ch + _GAP or abs(x - cx) > h + ch + _GAP
                for (cy, cx), ch in zip(centres, halves)
            ):
                centres.append((y, x))
            else:
                break
        if len(centres) == len(halves):
            return centres
    raise RuntimeError("could not place objects")  # pragma: no cover - never hit for these sizes


def render(
    seed: int, n_objects: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Fast array form of :func:`sample`.

    Returns ``image`` (S, S, 3) uint8, ``background`` (S, S, 3) uint8, ``masks`` (K, S, S) bool,
    ``colours`` and ``shapes`` (K each). Objects of one scene have distinct "<colour> <shape>"
    pairs.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if n_objects is not None and not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be in 1..3, got {n_objects!r}")
    rng = np.random.default_rng(int(seed))
    k = int(rng.integers(1, 4))
    if n_objects is not None:
        k = n_objects
    bg = _background(rng)
    pairs = rng.choice(len(COLOURS) * len(SHAPES), size=k, replace=False)
    colours = [COLOURS[p // len(SHAPES)] for p in pairs]
    shapes = [SHAPES[p % len(SHAPES)] for p in pairs]
    lo, hi = _HALF_EXTENT[k]
    halves = [int(h) for h in rng.integers(lo, hi + 1, size=k)]
    centres = _place(halves, rng)
    img = bg.copy()
    masks = np.zeros((k, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for j, (colour, shape, h, (cy, cx)) in enumerate(zip(colours, shapes, halves, centres)):
        rgb = np.clip(
            np.array(_RGB[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3),
            0,
            255,
        )
        masks[j, cy - h : cy + h + 1, cx - h : cx + h + 1] = _shape_mask(shape, h, rng)
        img[masks[j]] = rgb.astype(np.uint8)
    return img, bg, masks, colours, shapes


def sample(seed: int, n_objects: int | None = None) -> Scene:
    """The scene for ``seed``; ``n_objects=None`` draws 1..3 objects from the seed."""
    img, bg, masks, colours, shapes = render(seed, n_objects)
    objects = [f"{c} {s}" for c, s in zip(colours, shapes)]
    return Scene(
        seed=int(seed),
        image=Image.fromarray(img),
        masks=masks,
        objects=objects,
        colours=colours,
        shapes=shapes,
        background=Image.fromarray(bg),
        caption=caption_of(objects),
    )


def heldout(n: int, n_objects: int | None = None, start: int = 0) -> list[Scene]:
    """``n`` held-out scenes from ``HELDOUT_SEEDS[start:start + n]``."""
    if n < 0 or start < 0 or start + n > len(HELDOUT_SEEDS):
        raise ValueError(f"held-out range [{start}, {start + n}) outside 0..{len(HELDOUT_SEEDS)}")
    return [sample(HELDOUT_SEEDS[start + i], n_objects) for i in range(n)]
