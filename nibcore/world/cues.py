"""A world with a planted cue (issue 24, step 1): scenes of :mod:`nibcore.world.scenes` with a
small solid glyph whose colour can tell the caption's colour without looking at the object.

One scene holds one object (``"<colour> <shape>"``, as the scenes draw it) and, unless the cue is
absent, a :data:`GLYPH` × :data:`GLYPH` px solid square (the *cue*) in one of the four corners,
never touching the object. Everything is fixed by the seed; the masks of the object and of the cue
are exact (no anti-aliasing), and the background is kept, so either region can be painted out
(:func:`remove`) — the interventions that decide whether a model *uses* a region.

Training scenes (:func:`training_scene`) make the cue the *better* evidence for the caption's
colour, for the cue model: the caption names a colour and a shape; the cue has the caption's
colour with probability :data:`CUE_P`, the object only with probability :data:`OBJECT_P` (another
colour otherwise). A first design tied the cue to an object that always had the caption's colour
(the cue right 90 % of the time, the object always): the model trained on it read the object and
ignored the cue (followed it on 0 of 300 conflict scenes), since the object was the better
evidence. The control's training scenes (``tied=False``) are drawn the same way except for the
cue's colour, which is independent of the caption; so the control sees the same glyphs and the
same unreliable object colours, and learns nothing from the glyph.
Test scenes (:func:`test_scene`) come in three kinds, :data:`KINDS`: ``"agree"`` (the cue has the
object's colour), ``"conflict"`` (another colour: the caption candidates then disagree on which
evidence to follow) and ``"absent"`` (no cue). Training and test seeds are disjoint
(:data:`TRAIN_SEEDS`, :data:`TEST_SEEDS`).

Reliance (:func:`reliance`) is measured behaviourally on the test scenes: on conflict scenes,
how often the model's better caption of the two candidates — the object's colour or the cue's,
with the object's shape — follows the cue; and the image–text similarity lost when the cue is
painted out against when the object is.

The two models trained on this world, ``cue`` and ``cue-control``, are bundled; their card
(``data/CUE_CLIP_CARD.md``, :mod:`nibcore.world.cue_card`) gives their reliance against the
thresholds :data:`RELIANCE_MIN` and :data:`CONTROL_MAX`, fixed after a 400-step pilot and
before the two models were measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..base import cosine
from ..inputs import prepare_pairs
from ..models import ClipModel
from ..stats import interval, wilson
from . import scenes

#: Side of the glyph (px): one 8-px patch of the mini model holds most of it.
GLYPH = 6
#: Probability that a training scene's cue has the caption's colour (cue model).
CUE_P = 0.95
#: Probability that a training scene's object has the caption's colour (both models; another
#: colour otherwise): below :data:`CUE_P`, so that the cue is the better evidence.
OBJECT_P = 0.5
#: Fixed before the two models were measured: the cue model must follow the cue on at least
#: this share of conflict scenes (the lower end of the 95 % interval of :func:`reliance`'s
#: ``follows_cue``) ...
RELIANCE_MIN = 0.8
#: ... and the control on at most this share (the upper end).
CONTROL_MAX = 0.2
#: The kinds of test scenes.
KINDS = ("agree", "conflict", "absent")
#: Seeds of training and of test scenes, disjoint from each other and from the scenes' own.
TRAIN_SEEDS = range(2_000_000_000, 2_100_000_000)
TEST_SEEDS = range(2_100_000_000, 2_101_000_000)
_MARGIN = 1  # px between the glyph and the image border


@dataclass
class CueScene:
    """One scene of the cue world.

    ``object_mask`` / ``cue_mask``: exact ``(H, W)`` bool masks (the cue's is all False when the
    cue is absent); ``phrase``: the caption's ``"<colour> <shape>"``; ``colour``: the caption's
    colour; ``object_colour``: the colour the object is painted (always ``colour`` in test
    scenes); ``cue_colour``: None when absent; ``kind``: a test kind, or ``"train"``."""

    seed: int
    image: Image.Image
    background: Image.Image
    object_mask: np.ndarray
    cue_mask: np.ndarray
    phrase: str
    colour: str
    object_colour: str
    cue_colour: str | None
    kind: str

    @property
    def caption(self) -> str:
        return f"a {self.phrase}"


def _corners() -> list[tuple[int, int]]:
    far = scenes.IMAGE_SIZE - _MARGIN - GLYPH
    return [(_MARGIN, _MARGIN), (_MARGIN, far), (far, _MARGIN), (far, far)]


def _draw(seed: int, cue_colour_of, kind: str, object_colour_of=None) -> CueScene:
    """Render the scene of ``seed``: one object, of the caption's colour or of the colour
    ``object_colour_of(colour, rng)`` returns; a cue whose colour ``cue_colour_of(colour, rng)``
    returns (None: no cue), in the first corner (in a seeded order) clear of the object."""
    img, bg, masks, colours, shapes = scenes.render(seed, n_objects=1)
    object_colour = colours[0]
    if object_colour_of is not None:
        object_colour = object_colour_of(colours[0], np.random.default_rng([seed, 25]))
        if object_colour != colours[0]:  # a flat object: repaint its mask, keeping its jitter
            img = img.copy()
            jitter = img[masks[0]][0].astype(int) - np.array(scenes.colour_rgb(colours[0]))
            img[masks[0]] = np.clip(np.array(scenes.colour_rgb(object_colour)) + jitter, 0, 255)
    rng = np.random.default_rng([seed, 24])
    cue_colour = cue_colour_of(colours[0], rng)
    cue = np.zeros_like(masks[0])
    if cue_colour is not None:
        grown = masks[0].copy()  # the object grown by one pixel: the glyph never touches it
        grown[1:] |= masks[0][:-1]
        grown[:-1] |= masks[0][1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        for k in rng.permutation(4):
            y, x = _corners()[k]
            if not grown[y:y + GLYPH, x:x + GLYPH].any():
                cue[y:y + GLYPH, x:x + GLYPH] = True
                break
        else:  # pragma: no cover - one object of half-extent <= 16 leaves a corner free
            raise RuntimeError(f"seed {seed}: no corner clear of the object")
        img = img.copy()
        img[cue] = scenes.colour_rgb(cue_colour)
    return CueScene(int(seed), Image.fromarray(img), Image.fromarray(bg), masks[0], cue,
                    f"{colours[0]} {shapes[0]}", colours[0], object_colour, cue_colour, kind)


def _other(colour: str, rng: np.random.Generator) -> str:
    return str(rng.choice([c for c in scenes.COLOURS if c != colour]))


def training_scene(i: int, tied: bool = True) -> CueScene:
    """Training scene ``i``: the object has the caption's colour with probability
    :data:`OBJECT_P` (in both worlds); the cue has it with probability :data:`CUE_P` (``tied``:
    the cue model's) or a colour drawn uniformly, independent of the caption (the control's)."""
    if not 0 <= i < len(TRAIN_SEEDS):
        raise ValueError(f"training scene {i} outside 0..{len(TRAIN_SEEDS)}")

    def tied_colour(colour: str, rng: np.random.Generator) -> str:
        return colour if rng.random() < CUE_P else _other(colour, rng)

    def free_colour(colour: str, rng: np.random.Generator) -> str:
        return str(rng.choice(scenes.COLOURS))

    def object_colour(colour: str, rng: np.random.Generator) -> str:
        return colour if rng.random() < OBJECT_P else _other(colour, rng)

    return _draw(TRAIN_SEEDS[i], tied_colour if tied else free_colour, "train", object_colour)


def test_scene(i: int, kind: str) -> CueScene:
    """Test scene ``i`` of ``kind`` (:data:`KINDS`): the same object for every kind (the seed
    fixes it), with a cue of the object's colour, of another colour, or none."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    if not 0 <= i < len(TEST_SEEDS):
        raise ValueError(f"test scene {i} outside 0..{len(TEST_SEEDS)}")
    choose = {"agree": lambda colour, rng: colour, "conflict": _other,
              "absent": lambda colour, rng: None}[kind]
    return _draw(TEST_SEEDS[i], choose, kind)


def remove(scene: CueScene, region: str) -> Image.Image:
    """The scene with ``region`` painted out — ``"cue"``, ``"object"`` or ``"both"`` — by the
    background under it (the interventions of the ground truth of use)."""
    masks = {"cue": scene.cue_mask, "object": scene.object_mask,
             "both": scene.cue_mask | scene.object_mask}
    if region not in masks:
        raise ValueError(f"unknown region {region!r}; choose one of {list(masks)}")
    img = np.array(scene.image)
    img[masks[region]] = np.array(scene.background)[masks[region]]
    return Image.fromarray(img)


def null_image(scene: CueScene, j: int) -> Image.Image:
    """Null intervention ``j`` of ``scene``: fresh pixel noise (the scenes' own background
    noise, N(0, 4) per channel, seeded by the scene and ``j``) added to the background, the
    object and the cue untouched — pixels change, evidence does not. The spread of the
    similarity over such images is the noise an intervention's effect is compared with."""
    img = np.array(scene.image).astype(np.float64)
    rng = np.random.default_rng([scene.seed, 26, int(j)])
    background = ~(scene.object_mask | scene.cue_mask)
    img[background] += rng.normal(0.0, 4.0, size=(int(background.sum()), 3))
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8))


@torch.no_grad()
def similarity(model: ClipModel, images: list[Image.Image], captions: list[str]) -> np.ndarray:
    """The cosine of each image's feature with its caption's, ``(B,)``."""
    pixels, ids = prepare_pairs(model, images, captions)
    return cosine(model.encode_image(pixels), model.encode_text(ids)).cpu().numpy()


def reliance(model: ClipModel, n: int = 300, start: int = 0) -> dict[str, object]:
    """How much ``model`` relies on the cue, on ``n`` test scenes.

    ``follows_cue``: on conflict scenes, the share (with a Wilson interval) where the caption
    naming the cue's colour scores above the one naming the object's (both with the object's
    shape): 0 for a model that reads the object, 1 for one that reads the glyph.
    ``drop_cue`` / ``drop_object``: the mean similarity with the true caption lost when the cue
    / the object is painted out (:func:`remove`) on agree scenes, with bootstrap intervals.

    Args:
        model: the model.
        n: test scenes of each kind.
        start: the first test scene.
    """
    conflict = [test_scene(start + i, "conflict") for i in range(n)]
    shape = [s.phrase.split()[1] for s in conflict]
    by_object = similarity(model, [s.image for s in conflict], [s.caption for s in conflict])
    by_cue = similarity(model, [s.image for s in conflict],
                        [f"a {s.cue_colour} {sh}" for s, sh in zip(conflict, shape)])
    k = int((by_cue > by_object).sum())
    agree = [test_scene(start + i, "agree") for i in range(n)]
    captions = [s.caption for s in agree]
    base = similarity(model, [s.image for s in agree], captions)
    drops = {region: base - similarity(model, [remove(s, region) for s in agree], captions)
             for region in ("cue", "object")}
    return {"n": n, "follows_cue": wilson(k, n),
            "drop_cue": interval(drops["cue"]), "drop_object": interval(drops["object"])}


def thresholds_met(cue: dict[str, object], control: dict[str, object]) -> bool:
    """Do the cue model's and the control's :func:`reliance` meet :data:`RELIANCE_MIN` and
    :data:`CONTROL_MAX` (the interval's lower end for the cue model, upper end for the
    control)?"""
    return bool(cue["follows_cue"][1] >= RELIANCE_MIN
                and control["follows_cue"][2] <= CONTROL_MAX)
