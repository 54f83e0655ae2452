"""Ground truth of use by intervention, and the faithfulness metrics of the cue world.

The cue world (:mod:`nibcore.world.cues`, dataset ``"cues"``) plants two regions in every test
scene, the object and a small glyph (the *cue*), and paints each out. What a model *uses* on a
pair is then measured, not assumed; the maps are asked afterwards. Everything here was fixed
before any method was run on the cue world.

Maps are read as every metric of the paper reads them: a bright pixel *supports* the caption
(keeping it should keep the cosine). The ground truth is therefore signed.

Per pair, from the columns of :func:`nibcore.evaluation.use_metrics` (the same on every
method's row of a pair):

* **effect** of region ``r``: ``e_r = img_s0 − use_s_r``, the image–caption cosine lost when
  ``r`` is painted out;
* **noise** ``σ``: the null interventions' spread (fresh background noise: pixels change,
  evidence does not), pooled over the pairs of one model: the root of the mean, over pairs,
  of the variance (ddof 1) of their :data:`~nibcore.evaluation.USE_NULL` null cosines;
* **role** of ``r`` (:data:`ROLES`): it **supports** the caption when ``e_r > K · σ`` (removing
  it lowers the cosine), **opposes** it when ``e_r < −K · σ`` (removing it raises the cosine:
  a cue of another colour than the caption's, for a model that reads the cue), else **none**;
  :data:`K` = 3.

Per method, over pairs (:func:`leaderboard`):

* **pointing into the supporting region** (``point_support``, 0–100): the pointing game's
  credit (:func:`nibcore.metrics.pointing_game`, ties share it) in the region(s) that support
  the caption — both when both do (they are disjoint, so the credits add); pairs where neither
  supports are left out;
* **density** in a supporting region (``density_cue`` / ``density_object``): the map's positive
  mass per unit of the region's area (:func:`nibcore.metrics.mass_density`; 1 is chance),
  averaged over the pairs where that region supports — a 36-pixel glyph can hold only a little
  mass, so mass alone would always favour the object;
* **rank agreement** (``rho``): Spearman's ρ across all pairs between the map's
  ``density_cue − density_object`` and the measured ``e_cue − e_object`` — does the map give
  more weight to the region whose removal costs more? With a 95 % interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .evaluation import USE_NULL
from .stats import interval, paired, spearman_ci

#: Used: an effect larger than K times the pooled noise of the null interventions.
K = 3.0
#: The regions of the cue world.
REGIONS = ("cue", "object")
#: The role of a region on a pair.
ROLES = ("supports", "opposes", "none")


def _image(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[rows["side"] == "image"] if "side" in rows else rows
    need = ["img_s0", *(f"use_s_{r}" for r in REGIONS),
            *(f"use_null_{j}" for j in range(USE_NULL))]
    missing = [c for c in need if c not in rows]
    if missing:
        raise ValueError(f"rows without the ground truth of use (missing {missing}): score the "
                         f"cue world's pairs (dataset 'cues')")
    return rows


def noise(rows: pd.DataFrame) -> float:
    """The pooled noise ``σ`` of one model's rows (see the module docstring)."""
    per_pair = _image(rows).drop_duplicates("id")
    null = per_pair[[f"use_null_{j}" for j in range(USE_NULL)]].to_numpy(float)
    return float(np.sqrt(np.mean(np.var(null, axis=1, ddof=1))))


def ground_truth(rows: pd.DataFrame, k: float = K) -> pd.DataFrame:
    """Per pair of one model: ``effect_cue``, ``effect_object``, ``role_cue``,
    ``role_object`` (:data:`ROLES`) and the threshold ``k · σ`` (``threshold``), indexed by the
    pair's id.

    Args:
        rows: the evaluation rows of one model on the cue world (any methods).
        k: the threshold in units of the noise.
    """
    image = _image(rows)
    if "model" in image and image["model"].nunique() > 1:
        raise ValueError("ground_truth takes the rows of one model: the noise and the effects "
                         "are the model's own")
    threshold = k * noise(image)
    per_pair = image.drop_duplicates("id").set_index("id")
    out = pd.DataFrame(index=per_pair.index)
    for r in REGIONS:
        e = per_pair["img_s0"] - per_pair[f"use_s_{r}"]
        out[f"effect_{r}"] = e
        out[f"role_{r}"] = np.select([e > threshold, e < -threshold], ROLES[:2], ROLES[2])
    out["threshold"] = threshold
    return out


def pair_scores(rows: pd.DataFrame, k: float = K) -> pd.DataFrame:
    """Every image row of one model with its pair's ground truth (:func:`ground_truth`) and
    ``point_support``: the pointing credit in the supporting region(s), NaN where none
    supports."""
    image = _image(rows)
    rows = image.join(ground_truth(image, k), on="id")
    support = {r: rows[f"role_{r}"] == "supports" for r in REGIONS}
    point = sum(np.where(support[r], rows[f"use_point_{r}"], 0.0) for r in REGIONS)
    rows["point_support"] = np.where(support["cue"] | support["object"], point, np.nan)
    return rows


def leaderboard(rows: pd.DataFrame, methods: Sequence[str] | None = None, k: float = K,
                seed: int = 0) -> pd.DataFrame:
    """One row per method (of one model): ``n`` pairs; ``point_support`` and the densities in
    the supporting regions, each with its 95 % interval (``_low`` / ``_high``) and the pairs it
    averages (``_n``); ``rho`` with its interval. See the module docstring.

    Args:
        rows: the evaluation rows of one model on the cue world.
        methods: the methods, in order (None: all, in order of appearance).
        k: the threshold in units of the noise.
        seed: bootstrap seed.
    """
    scored = pair_scores(rows, k)
    methods = list(methods) if methods is not None else list(dict.fromkeys(scored["method"]))
    out = []
    for m in methods:
        g = scored[scored["method"] == m]
        if g.empty:
            continue
        row = dict(method=m, n=int(g["id"].nunique()))
        for name, values in (
                ("point_support", g["point_support"]),
                ("density_cue", g.loc[g["role_cue"] == "supports", "use_density_cue"]),
                ("density_object", g.loc[g["role_object"] == "supports", "use_density_object"])):
            v = values.dropna().to_numpy(float)
            iv = interval(v, seed=seed) if v.size else None
            row.update({name: iv.value if iv else np.nan, f"{name}_low": iv.low if iv else np.nan,
                        f"{name}_high": iv.high if iv else np.nan, f"{name}_n": int(v.size)})
        x = g["use_density_cue"] - g["use_density_object"]
        y = g["effect_cue"] - g["effect_object"]
        rho, low, high = spearman_ci(x.to_numpy(float), y.to_numpy(float))
        row.update(rho=rho, rho_low=low, rho_high=high)
        out.append(row)
    return pd.DataFrame(out)


def role_counts(rows: pd.DataFrame, k: float = K) -> pd.DataFrame:
    """How many pairs of one model give each region each role (:data:`ROLES`), per scene kind
    (``meta_kind``: agree / conflict) and in all: one row per (kind, role of the cue), one
    column per role of the object."""
    gt = ground_truth(rows, k)
    kinds = _image(rows).drop_duplicates("id").set_index("id").get("meta_kind")
    gt["kind"] = kinds if kinds is not None else "all"
    gt = pd.concat([gt, gt.assign(kind="all")]) if kinds is not None else gt
    table = pd.crosstab([gt["kind"], gt["role_cue"]], gt["role_object"])
    table = table.reindex(columns=list(ROLES), fill_value=0)
    order = {k: i for i, k in enumerate([*dict.fromkeys(kinds if kinds is not None else []),
                                         "all"])}
    table = table.iloc[sorted(range(len(table)), key=lambda i: (
        order.get(table.index[i][0], -1), ROLES.index(table.index[i][1])))]
    table.index.names = ["scenes", "cue"]
    table.columns.name = "object"
    return table


def paired_point_verdicts(rows: pd.DataFrame, method: str = "nib",
                          baselines: Sequence[str] | None = None, k: float = K,
                          seed: int = 0) -> pd.DataFrame:
    """``method`` against each baseline on ``point_support``, on the pairs where a region
    supports the caption: mean difference, its paired bootstrap interval and the verdict
    ("better", "worse", "not distinguishable at 95 %")."""
    scored = pair_scores(rows, k).dropna(subset=["point_support"])
    mine = scored[scored["method"] == method].set_index("id")["point_support"]
    baselines = [b for b in (baselines or dict.fromkeys(scored["method"])) if b != method]
    out = []
    for b in baselines:
        theirs = scored[scored["method"] == b].set_index("id")["point_support"]
        common = mine.index.intersection(theirs.index)
        if len(common) < 2:
            continue
        r = paired(mine[common].to_numpy(float), theirs[common].to_numpy(float), seed=seed)
        out.append(dict(baseline=b, n=r.n, diff=r.diff, low=r.low, high=r.high,
                        verdict=r.verdict))
    return pd.DataFrame(out)


def kind_densities(rows: pd.DataFrame, methods: Sequence[str] | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """Per method, scene kind (``meta_kind``: agree / conflict) and region: the mean density
    (:func:`nibcore.metrics.mass_density`, 1 is chance) over every pair of that kind, whatever
    the region's role, with its 95 % interval — whether a map changes where a region turns from
    supporting the caption to opposing it.

    Args:
        rows: the evaluation rows of one model on the cue world.
        methods: the methods, in order (None: all, in order of appearance).
        seed: bootstrap seed.
    """
    image = _image(rows)
    methods = list(methods) if methods is not None else list(dict.fromkeys(image["method"]))
    out = []
    for m in methods:
        for kind, g in image[image["method"] == m].groupby("meta_kind", sort=True):
            for r in REGIONS:
                iv = interval(g[f"use_density_{r}"].dropna().to_numpy(float), seed=seed)
                out.append(dict(method=m, kind=kind, region=r, n=iv.n, density=iv.value,
                                low=iv.low, high=iv.high))
    return pd.DataFrame(out)


def density_ceiling(scores: np.ndarray) -> float:
    """The largest density (:func:`nibcore.metrics.mass_density`) that any region can receive
    from this map: its positive part's maximum over its mean. A region's density is the mean
    of the map inside it over the mean everywhere, so it cannot exceed this; a flat map (mean
    near its maximum) cannot single out any region. NaN for a map without positive mass.

    Args:
        scores: the map ``(H, W)``.
    """
    positive = np.maximum(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0,
                                        posinf=0.0, neginf=0.0), 0.0)
    mean = positive.mean()
    return float(positive.max() / mean) if mean > 0 else float("nan")
