"""Controlled measurements of *why* a results table looks the way it does.

Each function runs one controlled comparison and returns a tidy frame with 95 % intervals
(:mod:`nibcore.stats`).

The text side of Table 2:

* :func:`length_comparison` — every method's text Confidence Drop (paper protocol) on the
  3-word ``scenes`` captions and on the 6-word ``scenes_text`` captions, from stored rows;
  :func:`length_shift` — the same, paired per scene (6-word minus 3-word, same image);
* :func:`probe_maps` — a live run that passes *controlled* text maps (uniform, one token zeroed,
  random, NIB's, NIB's inverted) through the paper protocol, so that the drop a map gets can be
  set beside the drop any map of that shape gets; :func:`probe_summary` summarises it and
  :func:`pooled_dependence` asks how much of NIB's drop is the map's value at the one token the
  protocol pools on (the content token with the largest id, since EOT is removed).

Insertion / deletion under the two protocols (:data:`nibcore.metrics.CURVE_PROTOCOLS`):

* :func:`curve_ranks` — every method's insertion and deletion AUC under ours and RISE's
  protocol, with intervals and ranks, on all scenes and split by the number of objects;
* :func:`rise_target_match` — how often RISE's target (the class the model predicts for the
  whole image, over the dataset's class prompts) is the object the caption names, by the
  number of objects: ours scores the caption, RISE's the top class;
* :func:`raster_ties` — one map's AUCs with its ties broken in row-major order (metric
  definitions version 1), in row-major order of the map turned by 180°, and as one group
  (version 2).

The cue world (:mod:`nibcore.faithfulness`):

* :func:`map_profile` — how far each method's maps can single out any region at all (the
  median over pairs of :func:`nibcore.faithfulness.density_ceiling`, the map's maximum over its
  mean) and where their maximum lies (distance to the image's edge and to the object).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..columns import lower_is_better
from ..stats import bootstrap_ci, interval, paired, spearman_ci, wilson

#: The text Confidence Drop column of the paper's protocol in the stored rows.
DROP = "txt_conf_drop_paper"
#: The controlled maps of :func:`probe_maps`, in display order.
PROBES = ("uniform", "zero_pooled", "zero_other", "random", "nib", "nib_inverted")
#: What each probe is, in words (for tables and sentences).
PROBE_WORDS = {
    "uniform": "uniform map (every token 1)",
    "zero_pooled": "one token zeroed: the pooled token",
    "zero_other": "one token zeroed: another content token",
    "random": "random map (uniform draws, min-max)",
    "nib": "NIB's map",
    "nib_inverted": "NIB's map inverted (1 − map)",
}


def text_rows(frames: dict[str, pd.DataFrame], protocol: str = "paper") -> pd.DataFrame:
    """The text rows of stored result frames, one per (dataset, method, pair), with the
    caption's word count and the protocol's ``s0`` / ``s1`` / ``drop``.

    Args:
        frames: stored rows by name (e.g. ``{"scenes": load("mini-table2"), ...}``); each frame's
            own ``dataset`` column is kept.
        protocol: the text protocol whose columns are read (``"paper"``, ``"m2ib"``...).
    """
    parts = []
    for df in frames.values():
        t = df[df["side"] == "text"]
        cols = {f"txt_s0_{protocol}": "s0", f"txt_s1_{protocol}": "s1",
                f"txt_conf_drop_{protocol}": "drop"}
        t = t[["dataset", "method", "id", "text", *cols]].rename(columns=cols)
        parts.append(t.dropna(subset=["drop"]))
    out = pd.concat(parts, ignore_index=True)
    out["words"] = out["text"].str.split().str.len()
    return out


def _iv(values: np.ndarray, seed: int) -> tuple[float, float, float, int]:
    v, lo, hi = bootstrap_ci(values, seed=seed)
    return v, lo, hi, int(np.asarray(values).size)


def length_comparison(rows: pd.DataFrame, methods: Sequence[str] | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """Mean text Confidence Drop, ``s0`` and ``s1`` per (dataset, method), with intervals and
    the method's rank within its dataset (1 = lowest drop = best).

    Args:
        rows: :func:`text_rows` output.
        methods: the methods kept, in order (None: all, in order of appearance).
        seed: bootstrap seed.

    Returns one row per (dataset, method): ``words`` (the captions' median word count), ``n``,
    and ``drop`` / ``s0`` / ``s1`` each with ``_low`` / ``_high``, and ``rank``.
    """
    methods = list(methods) if methods is not None else list(dict.fromkeys(rows["method"]))
    out = []
    for (ds, m), g in rows.groupby(["dataset", "method"], sort=False):
        if m not in methods:
            continue
        row = dict(dataset=ds, method=m, words=int(g["words"].median()))
        for col in ("drop", "s0", "s1"):
            v, lo, hi, n = _iv(g[col].to_numpy(float), seed)
            row.update({col: v, f"{col}_low": lo, f"{col}_high": hi, "n": n})
        out.append(row)
    frame = pd.DataFrame(out)
    frame["rank"] = frame.groupby("dataset")["drop"].rank(method="min").astype(int)
    frame["order"] = frame["method"].map({m: i for i, m in enumerate(methods)})
    return frame.sort_values(["dataset", "order"]).drop(columns="order").reset_index(drop=True)


def length_shift(rows: pd.DataFrame, short: str = "scenes", long: str = "scenes_text",
                 seed: int = 0) -> pd.DataFrame:
    """Per method, the paired change of text Confidence Drop from the short to the long
    captions on the *same scenes* (pairs matched by id): ``diff`` = mean(long − short), its
    paired bootstrap interval, ``n`` and a verdict in words ("higher", "lower" or
    "not distinguishable at 95 %").

    Args:
        rows: :func:`text_rows` output holding both datasets.
        short: the dataset of short captions.
        long: the dataset of long captions.
        seed: bootstrap seed.
    """
    out = []
    for m, g in rows.groupby("method", sort=False):
        a = g[g["dataset"] == long].set_index("id")["drop"]
        b = g[g["dataset"] == short].set_index("id")["drop"]
        common = a.index.intersection(b.index)
        if len(common) < 2:
            continue
        r = paired(a[common].to_numpy(float), b[common].to_numpy(float), seed=seed)
        word = ("higher" if r.low > 0 else "lower" if r.high < 0
                else "not distinguishable at 95 %")
        out.append(dict(method=m, n=r.n, diff=r.diff, low=r.low, high=r.high, p=r.p_wilcoxon,
                        change=word))
    return pd.DataFrame(out)


def pooled_position(ids: torch.Tensor, eot_id: int) -> tuple[int, int]:
    """``(n_content, k)``: the number of content tokens of one tokenised caption (SOT .. EOT,
    zero padding) and the content position the paper protocol pools on — the first occurrence
    of the largest content id (``argmax``), since SOT and EOT are removed.

    Args:
        ids: ``(C,)`` token ids.
        eot_id: the end-of-text id.
    """
    ids = ids.detach().cpu().long()
    n = int((ids == eot_id).nonzero()[0, 0]) + 1
    content = ids[1: n - 1]
    return n - 2, int(torch.argmax(content))


def probe_maps(model, dataset, n: int = 60, seed: int = 0, method: str = "nib"
               ) -> pd.DataFrame:
    """Pass controlled text maps through the paper protocol on ``n`` pairs of ``dataset``.

    Per pair, the maps (over SOT..EOT, values in [0, 1]) are: ``uniform`` (all 1: the protocol
    changes nothing, so the drop must be 0), ``zero_pooled`` (1 everywhere but 0 at the pooled
    content token), ``zero_other`` (0 at one other content token, the mean over them), ``random``
    (uniform draws, min-max normalised: one token is always 0), ``method``'s map and its
    inversion ``1 − map``.

    Args:
        model: a :class:`nibcore.models.ClipModel`.
        dataset: a :class:`nibcore.datasets.PairDataset`.
        n: pairs (the first ``n`` of the seeded subset the evaluation uses).
        seed: the subset's and the random maps' seed.
        method: the attribution method whose text map is probed.

    Returns one row per (pair, probe): ``id``, ``words``, ``tokens`` (content tokens),
    ``probe``, ``s0``, ``s1``, ``drop`` (× 100, clipped at 0 as the metric does), and
    ``pooled_value`` (the probed map's value at the pooled token).
    """
    from ..attribution import explain
    from ..evaluation import seeded_subset
    from ..inputs import prepare_images
    from ..metrics import text_confidence

    rng = np.random.default_rng(seed)
    idx = seeded_subset(len(dataset), n, seed)
    pairs = [dataset[i] for i in idx]
    pixels = prepare_images(model, [p.image for p in pairs])
    ids = model.tokenize([p.text for p in pairs])
    atts = explain(model, pixels, [p.text for p in pairs], method=method, side="text")
    with torch.no_grad():
        feats = model.encode_image(pixels)
    rows = []
    for b, (pair, att) in enumerate(zip(pairs, atts)):
        t, k = pooled_position(ids[b], model.eot_id)
        nib = np.nan_to_num(np.asarray(att.scores, dtype=np.float64))
        rand = rng.random(t + 2)
        rand = (rand - rand.min()) / (rand.max() - rand.min())
        maps = {"uniform": [np.ones(t + 2)]}
        z = np.ones(t + 2)
        z[1 + k] = 0.0
        maps["zero_pooled"] = [z]
        others = []
        for j in range(t):
            if j != k:
                z = np.ones(t + 2)
                z[1 + j] = 0.0
                others.append(z)
        maps["zero_other"] = others
        maps["random"] = [rand]
        maps["nib"] = [nib]
        maps["nib_inverted"] = [1.0 - nib]
        for probe, group in maps.items():
            if not group:
                continue
            conf = text_confidence(model, pixels[b: b + 1].expand(len(group), -1, -1, -1),
                                   ids[b: b + 1].expand(len(group), -1), group, "paper",
                                   feats[b: b + 1].expand(len(group), -1))
            rows.append(dict(id=pair.id, words=len(pair.text.split()), tokens=t, probe=probe,
                             s0=float(conf["s0"].mean()), s1=float(conf["s1"].mean()),
                             drop=float(conf["drop"].mean()),
                             pooled_value=float(np.mean([g[1 + k] for g in group]))))
    out = pd.DataFrame(rows)
    out["method"] = method
    return out


def probe_summary(probes: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean drop, ``s1`` and pooled-token value per (words, probe), with bootstrap intervals,
    and ``pooled_is_zero``: the share (%) of pairs whose map is 0 at the pooled token.

    Args:
        probes: :func:`probe_maps` rows (one or several datasets, told apart by ``words``).
        seed: bootstrap seed.
    """
    out = []
    for (w, probe), g in probes.groupby(["words", "probe"], sort=False):
        row = dict(words=int(w), probe=probe, what=PROBE_WORDS.get(probe, probe))
        for col in ("drop", "s1", "pooled_value"):
            v, lo, hi, n = _iv(g[col].to_numpy(float), seed)
            row.update({col: v, f"{col}_low": lo, f"{col}_high": hi, "n": n})
        row["pooled_is_zero"] = 100.0 * float((g["pooled_value"] == 0).mean())
        out.append(row)
    frame = pd.DataFrame(out)
    frame["order"] = frame["probe"].map({p: i for i, p in enumerate(PROBES)})
    return frame.sort_values(["words", "order"]).drop(columns="order").reset_index(drop=True)


def probe_contrasts(probes: pd.DataFrame, pairs: Sequence[tuple[str, str]] = (
        ("zero_pooled", "zero_other"), ("nib", "random"), ("nib", "nib_inverted"),
        ("nib", "zero_pooled")), seed: int = 0) -> pd.DataFrame:
    """Paired contrasts between probes on the same pairs, per caption length: ``diff`` =
    mean(drop of ``a`` − drop of ``b``), its paired interval, ``n`` and ``verdict`` for ``a``
    (lower drop = "better").

    Args:
        probes: :func:`probe_maps` rows.
        pairs: the ``(a, b)`` probe pairs compared.
        seed: bootstrap seed.
    """
    out = []
    for w, g in probes.groupby("words", sort=False):
        wide = g.pivot(index="id", columns="probe", values="drop")
        for a, b in pairs:
            if a not in wide or b not in wide:
                continue
            both = wide[[a, b]].dropna()
            r = paired(both[a].to_numpy(), both[b].to_numpy(), lower_is_better=True, seed=seed)
            out.append(dict(words=int(w), a=a, b=b, n=r.n, diff=r.diff, low=r.low, high=r.high,
                            p=r.p_wilcoxon, verdict=r.verdict))
    return pd.DataFrame(out)


def pooled_dependence(probes: pd.DataFrame, probe: str = "nib") -> pd.DataFrame:
    """How much of a map's drop is its value at the pooled token: per caption length, Spearman's
    ρ between the pooled-token value and the drop across pairs (Fisher-z interval), with ``n``.

    Args:
        probes: :func:`probe_maps` rows.
        probe: which probe's rows.
    """
    out = []
    for w, g in probes[probes["probe"] == probe].groupby("words", sort=False):
        rho, lo, hi = spearman_ci(g["pooled_value"].to_list(), g["drop"].to_list())
        out.append(dict(words=int(w), probe=probe, n=len(g), rho=rho, low=lo, high=hi))
    return pd.DataFrame(out)


# --- insertion / deletion: ours and RISE's -------------------------------------------------------

#: The insertion and deletion columns of each curve protocol in the stored rows.
CURVE_COLUMNS = {"ours": ("img_insertion", "img_deletion"),
                 "rise": ("img_insertion_rise", "img_deletion_rise")}


def scene_kind(n_objects: int) -> str:
    """``"one object"`` or ``"two or three objects"``: the split of :func:`curve_ranks`."""
    return "one object" if int(n_objects) == 1 else "two or three objects"


def curve_ranks(rows: pd.DataFrame, methods: Sequence[str] | None = None,
                seed: int = 0) -> pd.DataFrame:
    """Insertion and deletion AUC of every method under each curve protocol, on all scenes and
    on the scenes with one object / with two or three, with each method's rank (1 = best:
    highest insertion, lowest deletion) among the methods in the same (scenes, protocol,
    curve).

    Args:
        rows: stored image rows with both protocols' columns (:data:`CURVE_COLUMNS`); with
            ``meta_n_objects`` (the scenes' Table 2 files) also split by it.
        methods: the methods kept, in order (None: all, in order of appearance).
        seed: bootstrap seed.

    Returns one row per (scenes, protocol, curve, method): ``value``, ``low``, ``high``, ``n``,
    ``rank``.
    """
    image = rows[rows["side"] == "image"]
    methods = list(methods) if methods is not None else list(dict.fromkeys(image["method"]))
    groups = [("all", image)]
    if "meta_n_objects" in image:  # scenes: also split by the number of objects
        groups += list(image.groupby(image["meta_n_objects"].map(scene_kind), sort=True))
    out = []
    for kind, g in groups:
        for protocol, cols in CURVE_COLUMNS.items():
            for curve, col in zip(("insertion", "deletion"), cols):
                if col not in g:
                    continue
                for m in methods:
                    vals = g.loc[g["method"] == m, col].dropna().to_numpy(float)
                    if vals.size:
                        iv = interval(vals, seed=seed)
                        out.append(dict(scenes=kind, protocol=protocol, curve=curve, column=col,
                                        method=m, value=iv.value, low=iv.low, high=iv.high,
                                        n=iv.n))
    frame = pd.DataFrame(out)
    sign = frame["column"].map(lambda c: 1.0 if lower_is_better(c) else -1.0)
    frame["rank"] = (frame.assign(key=sign * frame["value"])
                     .groupby(["scenes", "protocol", "curve"])["key"]
                     .rank(method="min").astype(int))
    return frame


@torch.no_grad()
def rise_target_match(model, dataset, n: int = 300, seed: int = 0,
                      rows_per_call: int = 64) -> pd.DataFrame:
    """How often the class RISE's protocol follows — the model's top class for the whole image
    over the dataset's class prompts — is the object the caption names (the caption is one of
    the class prompts on the scenes), on the first ``n`` pairs of the seeded permutation the
    store uses, by :func:`scene_kind`.

    Args:
        model: the CLIP model.
        dataset: a dataset with ``info["class_prompts"]`` whose captions are class prompts (the
            scenes).
        n: pairs.
        seed: the permutation's seed (:func:`nibcore.evaluation.seeded_subset`).
        rows_per_call: images per call of the image tower.

    Returns one row per scene kind and ``"all"``: ``n``, ``match`` (the share × 100 whose top
    class is the caption), Wilson's ``low`` / ``high``.
    """
    from ..evaluation import rise_classes, seeded_subset
    from ..inputs import prepare_images
    from ..metrics import clip_class_logits

    prompts = list(dataset.info["class_prompts"])
    logits = clip_class_logits(model, rise_classes(model, dataset, ("ours", "rise")))
    pairs = [dataset[i] for i in seeded_subset(len(dataset), n, seed)]
    unknown = sorted({p.text for p in pairs} - set(prompts))
    if unknown:
        raise ValueError(f"captions that are not class prompts (e.g. {unknown[0]!r}): the "
                         f"match needs captions drawn from info['class_prompts']")
    top = []
    for i in range(0, len(pairs), rows_per_call):
        chunk = pairs[i:i + rows_per_call]
        pixels = prepare_images(model, [p.image for p in chunk])
        top += logits(pixels).argmax(dim=-1).tolist()
    hit = np.array([prompts[t] == p.text for t, p in zip(top, pairs)])
    kind = np.array([scene_kind(p.meta["n_objects"]) for p in pairs])
    out = []
    for name in ["all", *sorted(set(kind))]:
        h = hit if name == "all" else hit[kind == name]
        share, low, high = wilson(int(h.sum()), int(h.size))
        out.append(dict(scenes=name, n=int(h.size), match=100 * share, low=100 * low,
                        high=100 * high))
    return pd.DataFrame(out)


def raster_ties(model, pixels: torch.Tensor, ids: torch.Tensor, scores: np.ndarray
                ) -> pd.DataFrame:
    """Insertion and deletion AUC (ours) of one map whose ties are broken three ways: in
    row-major order (how metric definitions version 1 ranked tied pixels), in row-major order
    of the map turned by 180° (bottom row first, right to left), and as one group each
    (version 2, :func:`nibcore.metrics.changed_share`). A map without ties gets one value three
    times.

    Args:
        model: the CLIP model.
        pixels: one normalised image ``(1, 3, H, W)``.
        ids: its caption ``(1, C)``.
        scores: the map ``(H, W)``.

    Returns one row per tie order (``order``) with ``insertion``, ``deletion`` and ``tied``
    (pixels sharing their value with another pixel).
    """
    from ..metrics import insertion_deletion

    scores = np.asarray(scores, dtype=np.float64)
    h, w = scores.shape
    # a ramp far below the smallest gap between distinct values orders each tied group by
    # position and leaves every other pair of pixels in place
    values = np.unique(scores)
    gap = np.diff(values).min() if values.size > 1 else 1.0
    ramp = np.arange(h * w, dtype=np.float64).reshape(h, w) / (h * w) * gap / 2
    maps = {"row-major (version 1)": scores - ramp,
            "row-major, map turned 180°": scores - ramp[::-1, ::-1],
            "one group per value (version 2)": scores}
    curves = insertion_deletion(model, pixels.expand(3, -1, -1, -1), ids.expand(3, -1),
                                np.stack(list(maps.values())))
    _, counts = np.unique(scores, return_counts=True)
    return pd.DataFrame(dict(order=list(maps), insertion=curves["insertion"],
                             deletion=curves["deletion"],
                             tied=int(counts[counts > 1].sum())))


def protocol_sentences(ranks: pd.DataFrame, match: pd.DataFrame, method: str = "nib",
                       display: dict[str, str] | None = None) -> list[str]:
    """Sentences on how the two curve protocols rank ``method``, per kind of scene, beside how
    often RISE's target is the captioned object (generated from the measured values).

    Args:
        ranks: :func:`curve_ranks` output.
        match: :func:`rise_target_match` output.
        method: the method the sentences follow.
        display: method names for the page (e.g. ``paper.DISPLAY``).
    """
    from ..stats import fmt

    display = display or {}
    name = display.get(method, method)
    total = ranks["method"].nunique()
    m = match.set_index("scenes")
    out = []
    for kind in [k for k in ("one object", "two or three objects", "all")
                 if k in set(ranks["scenes"])]:
        r = ranks[(ranks["scenes"] == kind) & (ranks["method"] == method)].set_index(
            ["curve", "protocol"])["rank"]
        places = "; ".join(
            f"{curve} {r[(curve, 'ours')]} → {r[(curve, 'rise')]}"
            for curve in ("insertion", "deletion")
            if (curve, "ours") in r.index and (curve, "rise") in r.index)
        line = (f"**{kind[0].upper() + kind[1:]}**: {name}'s rank of {total}, ours → RISE's: "
                f"{places}.")
        if kind in m.index:
            row = m.loc[kind]
            line += (f" RISE's target is the captioned object in "
                     f"{fmt(row['match'], row['low'], row['high'])} % of {int(row['n'])} pairs.")
        out.append(line)
    return out


def map_profile(model, dataset, methods: Sequence[str], n: int = 12, seed: int = 0,
                params: dict[str, dict] | None = None) -> pd.DataFrame:
    """How each method's maps are shaped, on the first ``n`` pairs of the seeded permutation the
    store uses: one row per method with the medians over its maps of the ``ceiling``
    (:func:`nibcore.faithfulness.density_ceiling`), the map's ``mean`` (its maximum is 1),
    ``edge`` (the pixel distance from the map's maximum to the nearest image edge) and
    ``to_object`` (from the maximum to the nearest pixel of ``pair.meta["regions"]["object"]``,
    0 inside it), and the ``n`` maps. Ties at the maximum: the first in row-major order, a
    location only (no metric reads it).

    Args:
        model: the CLIP model.
        dataset: a dataset whose pairs have ``meta["regions"]`` (``load_dataset("cues")``).
        methods: method keys.
        n: pairs.
        seed: the permutation's seed (:func:`nibcore.evaluation.seeded_subset`).
        params: per-method parameters (the chapter's ``PARAMS``).
    """
    from ..attribution import explain
    from ..evaluation import seeded_subset
    from ..faithfulness import density_ceiling
    from ..metrics import fit_mask

    pairs = [dataset[i] for i in seeded_subset(len(dataset), n, seed)]
    out = []
    for m in methods:
        stats = []
        for p in pairs:
            s = np.asarray(explain(model, p.image, p.text, method=m,
                                   **(params or {}).get(m, {})).scores, dtype=np.float64)
            r, c = np.unravel_index(int(np.nanargmax(s)), s.shape)
            ys, xs = np.nonzero(fit_mask(p.meta["regions"]["object"], s.shape))
            stats.append((density_ceiling(s), float(np.nanmean(s)),
                          min(r, c, s.shape[0] - 1 - r, s.shape[1] - 1 - c),
                          float(np.min(np.hypot(ys - r, xs - c)))))
        v = np.array(stats, dtype=np.float64)
        out.append(dict(method=m, ceiling=float(np.nanmedian(v[:, 0])),
                        mean=float(np.median(v[:, 1])), edge=float(np.median(v[:, 2])),
                        to_object=float(np.median(v[:, 3])), n=len(stats)))
    return pd.DataFrame(out)
