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

from .attribution import explain
from .models import ClipModel


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


def rank_swap_bound(a: np.ndarray, b: np.ndarray, noise: float) -> float:
    """How far :func:`rank_correlation` of ``a`` and ``b`` can move when every value moves by
    up to ``noise``: each pair of neighbouring sorted values closer than ``noise`` (exact ties
    stay tied) can swap ranks, and one swap changes ``Σ d²`` by at most ``2(2n + 1)``, so
    ``|Δρ| ≤ 6 · k · 2(2n + 1) / (n (n² − 1))`` for ``k`` such neighbours in the two maps."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    n = a.size
    if n < 2:
        return 0.0
    k = sum(int(((g > 0) & (g <= noise)).sum()) for g in (np.diff(a), np.diff(b)))
    return 6.0 * k * 2 * (2 * n + 1) / (n * (n * n - 1.0))


def randomisation_tops(model: ClipModel, side: str) -> list[int]:
    """The depths the book's check randomises: the top 1, L//2 and all L blocks of the tower."""
    n_blocks = model.tower(side).n_blocks
    return sorted({1, n_blocks // 2, n_blocks})


def _maps(model: ClipModel, pair, methods: Sequence[str], side: str,
          params: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each method's map of one pair (one pair per call, so a map never depends on which other
    pairs are explained with it): the [0, 1] image map, or the content-token scores."""
    out = {}
    for m in methods:
        a = explain(model, [pair.image], [pair.text], method=m, side=side,
                    **params.get(m, {}))[0]
        out[m] = a.scores if side == "image" else a.content_scores
    return out


def randomisation_test(model: ClipModel, pairs: Sequence, methods: Sequence[str],
                       side: str = "image", tops: Sequence[int] | None = None, seed: int = 0,
                       params: dict[str, dict[str, Any]] | None = None,
                       partners: Sequence | None = None,
                       noise: float | None = None) -> pd.DataFrame:
    """Spearman correlation between each method's map on ``model`` and on copies whose top
    ``tops`` blocks of the ``side`` tower are re-initialised (:func:`randomise_blocks`).

    ``pairs``: objects with ``.image``, ``.text`` and ``.id`` (e.g.
    :class:`nibcore.datasets.Pair`). Image side: the [0, 1] maps at input resolution; text side:
    the content-token scores (SOT/EOT dropped). Returns one row per pair × method × top:
    ``id, method, side, kind, top, spearman, partner`` with ``kind == "randomised"``; low
    correlation = the map depends on what the randomised blocks learnt (as it should). Also, as a
    reference, ``kind == "other pair"`` (``top == 0``): the pair's original map against the
    original map of its *partner* — ``partners[k]`` for ``pairs[k]``, by default the next pair
    (cyclically) — the correlation two unrelated maps of that method have (e.g. through a shared
    centre bias). Every map is computed one pair per call, so a pair's rows do not depend on the
    other pairs (the results store computes them pair by pair and audits single pairs).
    ``noise``: when given, each row also has ``rank_bound``, how far its correlation can move
    when the maps move by that much (:func:`rank_swap_bound`; the store's audit uses it).
    """
    params = params or {}
    pairs = list(pairs)
    tops = list(tops) if tops is not None else list(range(1, model.tower(side).n_blocks + 1))
    if partners is None:
        partners = pairs[1:] + pairs[:1] if len(pairs) > 1 else [None] * len(pairs)
    twins = {top: randomise_blocks(model, side, top, seed) for top in tops}
    rows = []
    cached: tuple[str, dict[str, np.ndarray]] | None = None  # the last partner's maps
    for pair, partner in zip(pairs, partners, strict=True):
        own = cached[1] if cached and cached[0] == pair.id else \
            _maps(model, pair, methods, side, params)
        other = None
        if partner is not None and partner.id != pair.id:
            other = _maps(model, partner, methods, side, params)
            cached = (partner.id, other)
        for m in methods:
            comparable = other is not None and other[m].shape == own[m].shape
            rows.append(dict(id=pair.id, method=m, side=side, kind="other pair", top=0,
                             spearman=rank_correlation(own[m], other[m]) if comparable
                             else np.nan, partner=partner.id if partner is not None else None,
                             **_bound(own[m], other[m] if comparable else None, noise)))
        for top, twin in twins.items():
            maps = _maps(twin, pair, methods, side, params)
            for m in methods:
                rows.append(dict(id=pair.id, method=m, side=side, kind="randomised", top=top,
                                 spearman=rank_correlation(own[m], maps[m]),
                                 partner=None, **_bound(own[m], maps[m], noise)))
    return pd.DataFrame(rows)


def _bound(a: np.ndarray, b: np.ndarray | None, noise: float | None) -> dict[str, float]:
    if noise is None:
        return {}
    return {"rank_bound": rank_swap_bound(a, b, noise) if b is not None else 0.0}


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


def randomisation_table(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """:func:`randomisation_summary` with intervals: ``"mean [95 % interval]"`` strings
    (percentile bootstrap over pairs, seeded; :func:`nibcore.stats.interval`) and an ``n``
    column (the pairs behind each method's cells; NaN correlations of constant maps are left out
    and counted in ``constant maps``)."""
    from .stats import fmt, interval

    out: dict[str, dict[str, str]] = {}
    cols = [("randomised", t) for t in sorted(set(df.loc[df.kind == "randomised", "top"]))]
    cols.append(("other pair", 0))
    for m in dict.fromkeys(df["method"]):
        row = {}
        for kind, top in cols:
            x = df[(df.method == m) & (df.kind == kind) & (df.top == top)]["spearman"]
            name = f"top {top} random" if kind == "randomised" else "other pair (reference)"
            finite = x.dropna().to_numpy()
            if finite.size:
                ci = interval(finite, seed=seed)
                row[name] = fmt(ci.value, ci.low, ci.high)
            else:
                row[name] = "–"
        part = df[df.method == m]
        row["n"] = str(part["id"].nunique())
        row["constant maps"] = str(int(part["spearman"].isna().sum()))
        out[m] = row
    return pd.DataFrame(out).T


def randomisation_report(model: ClipModel, pairs: Sequence, methods: Sequence[str],
                         seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
                         partners: Sequence | None = None, noise: float | None = None
                         ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`randomisation_test` on both towers at :func:`randomisation_tops`. Returns
    ``(rows, summaries)``: every correlation, and a :func:`randomisation_summary` per side
    (``{"image": ..., "text": ...}``)."""
    rows = pd.concat([randomisation_test(model, pairs, methods, side=side,
                                         tops=randomisation_tops(model, side), seed=seed,
                                         params=params, partners=partners, noise=noise)
                      for side in ("image", "text")], ignore_index=True)
    return rows, {side: randomisation_summary(rows[rows.side == side])
                  for side in ("image", "text")}
