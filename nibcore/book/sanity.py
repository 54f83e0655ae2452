"""Sanity checks of attribution maps: model-parameter randomisation (Adebayo et al., 2018).

If re-initialising the upper blocks of a tower barely changes a method's map, the map is not
explaining what those blocks learnt — it is a property of the input (edges, colours) or of the
method. :func:`randomise_blocks` makes such a model (a copy; the original is untouched),
:func:`rank_correlation` compares two maps, and :func:`randomisation_test` runs the whole check
for several methods and depths of randomisation ("cascading": the top 1, 2, ... blocks).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from ..attribution import explain
from ..models import ClipModel


def randomise_blocks(model: ClipModel, side: str, top: int, seed: int = 0) -> ClipModel:
    """A copy of ``model`` whose ``side`` tower has its last ``top`` blocks re-initialised.

    Every parameter tensor of those blocks is redrawn from a normal distribution with that
    tensor's own mean and standard deviation (so scales — LayerNorm gains near 1, small biases —
    stay plausible and the network stays numerically healthy; only what was *learnt* is lost).
    Embeddings, the lower blocks, the final LayerNorm and the projection are kept. Seeded with a
    local generator: the same ``seed`` gives the same model.
    """
    tower = model.tower(side)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) \
            or not 0 <= top <= tower.n_blocks:
        raise ValueError(f"top must be an int in 0..{tower.n_blocks} for the {side} tower, "
                         f"got {top!r}")
    twin = copy.deepcopy(model)
    twin.name = f"{model.name}|random-{side}-top{top}-seed{seed}"
    gen = torch.Generator().manual_seed(int(seed))
    blocks = twin.tower(side).blocks
    with torch.no_grad():
        for block in list(blocks)[tower.n_blocks - top:]:
            for p in block.parameters():
                mean, std = p.mean().item(), p.std().item() if p.numel() > 1 else 0.0
                fresh = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std + mean
                p.copy_(fresh.to(p.device, p.dtype))
    return twin


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (flattened; ties get average
    ranks). NaN when either map is constant (it has no ranking to compare)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _maps(model: ClipModel, images, texts, method: str, side: str, params: dict[str, Any]
          ) -> list[np.ndarray]:
    atts = explain(model, list(images), list(texts), method=method, side=side, **params)
    return [a.scores if side == "image" else a.content_scores for a in atts]


def randomisation_test(model: ClipModel, pairs: Sequence, methods: Sequence[str],
                       side: str = "image", tops: Sequence[int] | None = None, seed: int = 0,
                       params: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """Spearman correlation between each method's map on ``model`` and on copies whose top
    ``tops`` blocks of the ``side`` tower are re-initialised (:func:`randomise_blocks`).

    ``pairs``: objects with ``.image`` and ``.text`` (e.g. :class:`nibcore.datasets.Pair`).
    Image side: the [0, 1] maps at input resolution; text side: the content-token scores (SOT/EOT
    dropped). Returns one row per method × top × pair: ``method, side, kind, top, id,
    spearman`` with ``kind == "randomised"``; low correlation = the map depends on what the
    randomised blocks learnt (as it should). Also, as a reference, ``kind == "other pair"``
    (``top == 0``): the original map of each pair against the original map of the *next* pair
    (cyclically) — the correlation two unrelated maps of that method have (e.g. through a shared
    centre bias).
    """
    params = params or {}
    tower = model.tower(side)
    tops = list(tops) if tops is not None else list(range(1, tower.n_blocks + 1))
    images = [p.image for p in pairs]
    texts = [p.text for p in pairs]
    ids = [getattr(p, "id", str(i)) for i, p in enumerate(pairs)]
    original = {m: _maps(model, images, texts, m, side, params.get(m, {})) for m in methods}
    rows = []
    for m in methods:
        maps = original[m]
        for k, pid in enumerate(ids):
            other = maps[(k + 1) % len(maps)]
            comparable = len(maps) > 1 and other.shape == maps[k].shape
            rows.append(dict(method=m, side=side, kind="other pair", top=0, id=pid,
                             spearman=rank_correlation(maps[k], other) if comparable else np.nan))
    for top in tops:
        twin = randomise_blocks(model, side, top, seed)
        for m in methods:
            maps = _maps(twin, images, texts, m, side, params.get(m, {}))
            for pid, a, b in zip(ids, original[m], maps):
                rows.append(dict(method=m, side=side, kind="randomised", top=top, id=pid,
                                 spearman=rank_correlation(a, b)))
    return pd.DataFrame(rows)


def randomisation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Spearman correlation per method (rows) and number of randomised top blocks
    (columns), with the "other pair" reference as the last column."""
    rand = df[df["kind"] == "randomised"].pivot_table(index="method", columns="top",
                                                      values="spearman", aggfunc="mean",
                                                      sort=False)
    rand.columns = [f"top {c} random" for c in rand.columns]
    ref = df[df["kind"] == "other pair"].groupby("method", sort=False)["spearman"].mean()
    rand["other pair (reference)"] = ref
    return rand


def randomisation_report(model: ClipModel, pairs: Sequence, methods: Sequence[str],
                         seed: int = 0, params: dict[str, dict[str, Any]] | None = None
                         ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`randomisation_test` on both towers, re-initialising the top 1, L//2 and all L
    blocks of each. Returns ``(rows, summaries)``: every correlation, and a
    :func:`randomisation_summary` per side (``{"image": ..., "text": ...}``)."""
    checks = []
    for side in ("image", "text"):
        n_blocks = model.tower(side).n_blocks
        tops = sorted({1, n_blocks // 2, n_blocks})
        checks.append(randomisation_test(model, pairs, methods, side=side, tops=tops, seed=seed,
                                         params=params))
    rows = pd.concat(checks, ignore_index=True)
    return rows, {side: randomisation_summary(rows[rows.side == side])
                  for side in ("image", "text")}
