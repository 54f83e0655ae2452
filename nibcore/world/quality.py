"""Quality figures of the mini CLIP on held-out scenes.

    python -m nibcore.world.quality [--n 1000] [--data data/]

1. ``zero_shot_top1``: single-object scenes, which of all "a <colour> <shape>" captions scores
   highest (also ``colour_acc`` / ``shape_acc`` of that top-1 caption).
2. ``neg_shape`` / ``neg_colour``: 2- and 3-object scenes, fraction of (scene, present object)
   pairs where "a <object>" scores above an absent caption differing only in shape / colour.
3. ``occlusion``: 2-object scenes, fraction of (scene, named object) pairs where filling the named
   object's mask with background lowers the image–caption cosine more than filling the other's.

Scenes: ``heldout(n, 1, start)``, ``heldout(n, 2, start + n)``, ``heldout(n, 3, start + 2n)``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from ..models import load_bundled
from . import scenes
from .train import CONTEXT_LENGTH, MEAN, STD


@torch.no_grad()
def image_features(
    model: open_clip.model.CLIP,
    preprocess: Callable,
    images: Sequence[Image.Image],
    batch: int = 256,
) -> torch.Tensor:
    """(N, D) L2-normalised image embeddings."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.stack([preprocess(im) for im in images[i : i + batch]])
        out.append(F.normalize(model.encode_image(x), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def text_features(
    model: open_clip.model.CLIP, tokenizer: Callable, texts: Sequence[str], batch: int = 512
) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings."""
    out = [
        F.normalize(model.encode_text(tokenizer(list(texts[i : i + batch]))), dim=-1)
        for i in range(0, len(texts), batch)
    ]
    return torch.cat(out)


def zero_shot(
    model: open_clip.model.CLIP, preprocess: Callable, tokenizer: Callable, sc: list[scenes.Scene]
) -> dict[str, float]:
    """Top-1 over all phrase captions on single-object scenes, plus per-attribute accuracy."""
    phrases = scenes.phrases()
    sims = (
        image_features(model, preprocess, [s.image for s in sc])
        @ text_features(model, tokenizer, [f"a {p}" for p in phrases]).T
    )
    pred = [phrases[i].split() for i in sims.argmax(1).tolist()]
    colour = np.mean([p[0] == s.colours[0] for p, s in zip(pred, sc)])
    shape = np.mean([p[1] == s.shapes[0] for p, s in zip(pred, sc)])
    top1 = np.mean([" ".join(p) == s.objects[0] for p, s in zip(pred, sc)])
    return {"zero_shot_top1": float(top1), "colour_acc": float(colour), "shape_acc": float(shape)}


def negatives(
    model: open_clip.model.CLIP,
    preprocess: Callable,
    tokenizer: Callable,
    sc: list[scenes.Scene],
    rng: np.random.Generator,
) -> dict[str, float]:
    """Fraction of present objects whose caption beats a shape-only / colour-only negative."""
    feats = image_features(model, preprocess, [s.image for s in sc])
    texts, owner = [], []
    for j, s in enumerate(sc):
        for k, obj in enumerate(s.objects):
            texts += [
                f"a {obj}",
                f"a {s.negative(k, 'shape', rng)}",
                f"a {s.negative(k, 'colour', rng)}",
            ]
            owner.append(j)
    t = text_features(model, tokenizer, texts).view(-1, 3, feats.shape[1])
    sims = torch.einsum("nd,nkd->nk", feats[owner], t)
    return {
        "neg_shape": float((sims[:, 0] > sims[:, 1]).float().mean()),
        "neg_colour": float((sims[:, 0] > sims[:, 2]).float().mean()),
    }


def occlusion(
    model: open_clip.model.CLIP, preprocess: Callable, tokenizer: Callable, sc: list[scenes.Scene]
) -> float:
    """Fraction of (2-object scene, named object) pairs where occluding the named object lowers the
    caption cosine more than occluding the other object."""
    if any(len(s.objects) != 2 for s in sc):
        raise ValueError("occlusion grounding needs 2-object scenes")
    occ = image_features(model, preprocess, [s.occluded(k) for s in sc for k in (0, 1)]).view(
        len(sc), 2, -1
    )
    txt = text_features(model, tokenizer, [f"a {o}" for s in sc for o in s.objects]).view(
        len(sc), 2, -1
    )
    sims = torch.einsum("nkd,njd->nkj", occ, txt)  # [scene, occluded object, named object]
    hits = (sims[:, 1, 0] > sims[:, 0, 0]).float() + (sims[:, 0, 1] > sims[:, 1, 1]).float()
    return float(hits.sum() / (2 * len(sc)))


def quality_report(
    model: open_clip.model.CLIP,
    n: int = 1000,
    seed: int = 0,
    start: int = 0,
    preprocess: Callable | None = None,
    tokenizer: Callable | None = None,
) -> dict[str, Any]:
    """All three quality figures on ``n`` held-out scenes per setting; ``seed`` draws the
    negatives."""
    preprocess = preprocess or open_clip.transform.image_transform(
        scenes.IMAGE_SIZE, is_train=False, mean=MEAN, std=STD
    )
    tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    model.eval()
    rng = np.random.default_rng(seed)
    single = scenes.heldout(n, 1, start)
    two = scenes.heldout(n, 2, start + n)
    three = scenes.heldout(n, 3, start + 2 * n)
    report: dict[str, Any] = {"n": n, "seed": seed}
    report.update(zero_shot(model, preprocess, tokenizer, single))
    report.update(negatives(model, preprocess, tokenizer, two + three, rng))
    report["occlusion"] = occlusion(model, preprocess, tokenizer, two)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="data")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mini = load_bundled("mini", args.data)
    print(
        json.dumps(
            quality_report(mini.clip, args.n, args.seed, preprocess=mini.preprocess,
                           tokenizer=mini.tokenizer),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
