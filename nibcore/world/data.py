"""The synthetic world as evaluation datasets: held-out scenes with exact object masks
(``"scenes"``), held-out scenes captioned with one present and one absent object
(``"scenes_text"``), and the cue world's test scenes with their interventions (``"cues"``).
Provided to :func:`nibcore.datasets.load_dataset` through the ``nibcore.datasets`` entry points
declared in ``pyproject.toml``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..datasets import Pair, PairDataset
from . import cues as _cues
from . import scenes as _scenes


def scene_pairs(n: int = 1000, n_objects: int | None = None, caption: str = "one",
                start: int = 0) -> PairDataset:
    """Held-out synthetic scenes (:func:`nibcore.world.scenes.heldout`) with exact object masks.

    ``caption="one"``: the caption names one object, chosen from the scene's seed, and
    ``meta["mask"]`` is its mask; ``caption="all"``: the scene's full caption, ``meta["mask"]`` the
    union of all objects. ``meta`` also holds ``masks`` (K, H, W), ``objects``, ``target`` (the
    named object's index, or -1 for all), ``seed``, ``n_objects``. ``id`` = ``"scene-<seed>"``.
    """
    if caption not in ("one", "all"):
        raise ValueError(f"caption must be 'one' or 'all', got {caption!r}")
    _check_range(n, start)

    def make(i: int) -> Pair:
        scene = _scenes.heldout(1, n_objects=n_objects, start=start + i)[0]
        meta = _scene_meta(scene)
        if caption == "one":
            k = int(np.random.default_rng(scene.seed).integers(len(scene.objects)))
            text, mask = scene.caption_for([k]), scene.masks[k]
        else:
            k, text, mask = -1, scene.caption, scene.masks.any(axis=0)
        meta.update(target=k, mask=mask)
        return Pair(scene.image, text, f"scene-{scene.seed}", meta)

    name = "scenes" + ("" if caption == "one" else "-all") + _k_suffix(n_objects)
    return PairDataset(name, n, make, None, {"caption": caption, "n_objects": n_objects,
                                             "class_prompts": class_prompts()})


def scene_text_pairs(n: int = 1000, n_objects: int | None = None, start: int = 0) -> PairDataset:
    """Held-out scenes captioned "a <X> and a <Y>" with one present object and one absent one
    (:meth:`Scene.negative`: same shape other colour, or same colour other shape), in an order
    drawn from the seed — text-side ground truth.

    ``meta``: ``present``, ``absent`` (phrases), ``kind`` (``"colour"``/``"shape"``: what the
    absent one changes), ``present_word`` / ``absent_word`` (the differing words), ``target``
    (present object's index), ``mask`` (its mask), ``masks``, ``objects``, ``seed``.
    """
    _check_range(n, start)

    def make(i: int) -> Pair:
        scene = _scenes.heldout(1, n_objects=n_objects, start=start + i)[0]
        rng = np.random.default_rng([scene.seed, 1])
        k = int(rng.integers(len(scene.objects)))
        kind = ("colour", "shape")[int(rng.integers(2))]
        absent = scene.negative(k, kind, rng)
        present = scene.objects[k]
        first, second = (present, absent) if rng.integers(2) == 0 else (absent, present)
        word = 0 if kind == "colour" else 1
        meta = _scene_meta(scene)
        meta.update(present=present, absent=absent, kind=kind, target=k, mask=scene.masks[k],
                    present_word=present.split()[word], absent_word=absent.split()[word])
        return Pair(scene.image, f"a {first} and a {second}", f"scene-{scene.seed}", meta)

    return PairDataset("scenes_text" + _k_suffix(n_objects), n, make, None,
                       {"n_objects": n_objects, "class_prompts": class_prompts()})


def cue_pairs(n: int = 1000, start: int = 0) -> PairDataset:
    """The cue world's test scenes (:mod:`nibcore.world.cues`) for the ground truth of use: pairs
    ``2j`` and ``2j + 1`` are test scene ``start + j`` with the cue of the object's colour
    (``"agree"``) and of another colour (``"conflict"``), captioned with the object's caption.

    ``meta``: ``mask`` (the object's), ``regions`` (``{"cue": mask, "object": mask}``),
    ``removed`` (region → the image with it painted out: ``"cue"``, ``"object"``, ``"both"``),
    ``null`` (:data:`nibcore.evaluation.USE_NULL` null interventions), ``kind``,
    ``cue_colour``, ``seed``. ``id`` = ``"cue-<seed>-<kind>"``.
    """
    from ..evaluation import USE_NULL

    if n < 1 or start < 0 or start + (n + 1) // 2 > len(_cues.TEST_SEEDS):
        raise ValueError(f"cue test scenes [{start}, {start + (n + 1) // 2}) outside "
                         f"0..{len(_cues.TEST_SEEDS)}")

    def make(i: int) -> Pair:
        kind = ("agree", "conflict")[i % 2]
        scene = _cues.test_scene(start + i // 2, kind)
        meta = dict(seed=scene.seed, kind=kind, cue_colour=scene.cue_colour,
                    mask=scene.object_mask,
                    regions={"cue": scene.cue_mask, "object": scene.object_mask},
                    removed={r: _cues.remove(scene, r) for r in ("cue", "object", "both")},
                    null=[_cues.null_image(scene, j) for j in range(USE_NULL)])
        return Pair(scene.image, scene.caption, f"cue-{scene.seed}-{kind}", meta)

    return PairDataset("cues", n, make, None, {"class_prompts": class_prompts()})


def class_prompts() -> list[str]:
    """The scenes' classes as prompts, ``"a <colour> <shape>"`` (30): the softmax of RISE's
    insertion/deletion protocol (:func:`nibcore.metrics.insertion_deletion`)."""
    return [f"a {p}" for p in _scenes.phrases()]


def _k_suffix(n_objects: int | None) -> str:
    return "" if n_objects is None else f"-k{n_objects}"


def _check_range(n: int, start: int) -> None:
    if n < 1 or start < 0 or start + n > len(_scenes.HELDOUT_SEEDS):
        raise ValueError(f"held-out scenes [{start}, {start + n}) outside "
                         f"0..{len(_scenes.HELDOUT_SEEDS)}")


def _scene_meta(scene) -> dict[str, Any]:
    return dict(seed=scene.seed, masks=scene.masks, objects=list(scene.objects),
                n_objects=len(scene.objects))


def _generated(loader):
    def load(root=None, **kw: Any) -> PairDataset:
        if root is not None:
            raise ValueError("the scenes are generated, not read from a folder: leave root=None")
        return loader(**kw)
    return load


#: The loaders ``load_dataset`` finds through the ``nibcore.datasets`` entry points
#: (``pyproject.toml``).
scenes = _generated(scene_pairs)
scenes_text = _generated(scene_text_pairs)
cues = _generated(cue_pairs)
