"""The results store's audit: recompute a seeded sample of stored rows and compare them with the
stored values within tolerances measured across numeric paths.

Audit (what the book build runs)::

    python -m nibcore.store audit [FILE ...] [--pairs 2] [--seed 0] [--report FILE.json]

:func:`audit` recomputes, with the current code and model, at least ``pairs`` pairs of every
``(method, side, params)`` group of a store file (every row of ``pairs`` pairs of a randomisation
file) and compares every metric column. It **collects every mismatch** (file, line, row, column,
stored and recomputed value) instead of stopping at the first, so a reader's build can print them
all and mark the tables they feed.

What counts as a mismatch (the tolerances are in ``data/results/tolerances.json``, written by
``scripts/measure_tolerances.py`` from the spread of the same sample recomputed under every
numeric path one machine reaches; the table is in the README):

* **continuous columns** (cosines, energies, AUCs, correlations): ``|stored − recomputed|`` above
  the column's tolerance: its measured spread × :data:`Tolerances.factor`, never above
  :data:`MAX_RTOL` and never below one unit of the stored value's 6th significant digit, relative
  to the column's :func:`scale` (a perturbed cosine to ``s0``, an insertion/deletion AUC to
  ``100·s0``, correlations and ground-truth margins to 1). Columns whose measured spread exceeds
  :data:`MAX_RTOL` are audited through the noise they are computed from instead of a looser
  tolerance: the energies through their map's noise (:func:`energy_allowed`), the randomisation
  check's correlations through the near-tied neighbours of their two maps
  (:func:`nibcore.sanity.rank_swap_bound`).
* **Confidence Drop** ``max(0, s0 − s1)·100`` is a difference of two cosines, so its relative
  noise is unbounded when ``s0 ≈ s1``; it is audited through ``s0`` and ``s1``: allowed
  ``100 · (tol(s0) + tol(s1))``.
* **yes/no outcomes** (pointing game, Confidence Increase ``[s1 > s0]``, text ground truth, the
  ``degenerate`` flags) and the values decided by a threshold (insertion/deletion step boundaries,
  M2IB's binarisation of a text map at its median): a changed value is a mismatch unless the
  outcome's **margin**, computed from the recomputed maps, is within the measured noise — the gap
  between the top map value inside and outside the mask, ``s1 − s0``, the value gap at a curve's
  step boundary, the distance of a token score to the median, the relative range of a map flagged
  degenerate. Such a flip is *excused* and counted, not hidden.

A file whose model hash or method parameters no longer match the code's is a mismatch of the
whole file. So is a file of metrics generated under other metric definitions (its sidecar's
``metrics_version``, 1 when absent, differs from :data:`nibcore.metrics.METRICS_VERSION`; a
randomisation file holds no metric, so its version does not date it): the audit then reports
"metric definitions changed since this file was generated: regenerate" for it and recomputes
nothing, instead of reporting every changed value as a numeric mismatch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .metrics import (CURVE_STEPS, METRICS_VERSION, TEXT_PROTOCOLS, degenerate_map, fit_mask,
                      raw_pixel_map, rise_counts)
from .models import ClipModel
from .numerics import FLOAT_NOISE_RTOL
from .store import (UNAUDITED, model_hashes, read_meta, read_rows, resolved_params, round_sig,
                    stale_metrics_version, store_dir)

#: No continuous column is audited looser than this, whatever the measured spread.
MAX_RTOL = 2e-4
#: The file the tolerances are read from, in the store's folder.
TOLERANCE_FILE = "tolerances.json"
#: Columns on a [−1, 1] scale (correlations, differences of map means): relative to 1.
UNIT_SCALE = ("spearman", "text_gt_margin", "text_gt_word_margin")
#: A degenerate flag flips only on a map whose relative range is within this many times the
#: constant-map threshold (:data:`nibcore.numerics.FLOAT_NOISE_RTOL`).
DEGENERATE_BAND = 10.0


class AuditError(AssertionError):
    """A store file the current code does not reproduce (the message names file, row, value)."""


@dataclass(frozen=True)
class Mismatch:
    """One stored value the current code does not reproduce within the tolerances."""

    file: str
    line: int | None
    id: str | None
    method: str | None
    side: str | None
    column: str | None
    stored: Any = None
    recomputed: Any = None
    detail: str = ""

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.detail}"
        what = ", ".join(str(x) for x in (self.id, self.method, self.side) if x is not None)
        text = f"{self.file}: line {self.line} ({what})"
        if self.column is not None:
            text += f": {self.column} = {self.stored} stored but {self.recomputed} recomputed"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass
class AuditReport:
    """What an audit found: rows checked, mismatches, and flips excused by their margin."""

    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    excused: list[Mismatch] = field(default_factory=list)

    def extend(self, other: "AuditReport") -> None:
        self.checked += other.checked
        self.mismatches += other.mismatches
        self.excused += other.excused

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """The report as the book build writes it (``NIB_AUDIT_REPORT``)."""
        return dict(checked=self.checked,
                    mismatches=[dict(vars(m), text=str(m)) for m in self.mismatches],
                    excused=[dict(vars(m), text=str(m)) for m in self.excused])


# --- tolerances ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerances:
    """The audit's tolerances, from the measured spread (see the module docstring).

    Args:
        rtol: per column, the relative tolerance (measured spread × ``factor``, clamped).
        raw_rtol: noise of a raw map between numeric paths, relative to its largest magnitude
            (measured × ``factor``); a [0, 1] map's noise follows from it per row
            (:func:`map_noise`).
        map_atol: noise of a [0, 1] map value where no raw map is at hand (the randomisation
            check's maps): the measured spread of maps that min-max does not amplify, ×
            ``factor``.
        factor: the safety margin applied to every measured spread.
        default_rtol: a column the measurement did not see (a new metric).
    """

    rtol: dict[str, float]
    raw_rtol: float
    map_atol: float
    factor: float
    default_rtol: float = MAX_RTOL

    def of(self, column: str) -> float:
        return self.rtol.get(column, self.default_rtol)

    def allowed(self, column: str, stored: float, now: float, row: dict[str, Any]) -> float:
        """Largest |stored − recomputed| accepted for a continuous column."""
        return max(self.of(column) * scale(column, stored, now, row), quantum(stored))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Tolerances":
        path = Path(path) if path else Path(store_dir()) / TOLERANCE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: measure the tolerances with "
                                    f"`python scripts/measure_tolerances.py`")
        data = json.loads(path.read_text())
        return cls(rtol={k: float(v) for k, v in data["rtol"].items()},
                   raw_rtol=float(data["raw_rtol"]), map_atol=float(data["map_atol"]),
                   factor=float(data["factor"]))


def scale(column: str, stored: float, now: float, row: dict[str, Any]) -> float:
    """What a column's noise is relative to. Correlations and margins: 1 (their range).
    A perturbed input's cosine ``s1``: the larger of ``|s1|`` and ``|s0|`` (its noise comes from
    a forward of the same size). Insertion/deletion AUCs (× 100): the larger of the AUC and
    ``100·|s0|`` (a deletion curve falls towards 0, its AUC does not carry its own noise).
    Everything else: the value itself."""
    own = max(abs(stored), abs(now))
    if column in UNIT_SCALE:
        return 1.0
    if column.startswith(("img_s1", "txt_s1_")):
        s0 = row.get(column.replace("s1", "s0", 1))
        return max(own, abs(s0)) if s0 is not None else own
    if column in ("img_insertion", "img_deletion") and "img_s0" in row:
        return max(own, 100.0 * abs(row["img_s0"]))
    return own


def quantum(value: float) -> float:
    """One unit of the 6th significant digit of ``value`` (the store's rounding step)."""
    value = abs(float(value))
    if value == 0 or not math.isfinite(value):
        return 0.0
    return 10.0 ** (math.floor(math.log10(value)) - 5)


# --- margins of the outcomes -----------------------------------------------------------------

def _rel_span(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.inf
    mag = float(np.abs(values).max())
    return float(values.max() - values.min()) / mag if mag > 0 else 0.0


def curve_boundary_gap(scores: np.ndarray, counts: Sequence[int] | np.ndarray | None = None
                       ) -> float:
    """Smallest value gap between the last pixel shown and the first pixel hidden at any step
    of the insertion/deletion curves (``inf`` for a degenerate map, one tie on every path).
    Exact ties (a ReLU's zero region) are changed together (:func:`changed_share`) and stay
    tied on every path: they do not count."""
    scores = np.asarray(scores, dtype=np.float64)
    if degenerate_map(scores):
        return math.inf
    values = -np.sort(-scores.ravel())
    if counts is None:  # ours: K steps
        counts = np.rint(np.arange(CURVE_STEPS + 1) / CURVE_STEPS * values.size).astype(int)
    counts = np.asarray(counts)
    counts = counts[(counts > 0) & (counts < values.size)]  # the curve's inner boundaries
    above, below = values[counts - 1], values[counts]
    gaps = above - below
    gaps = gaps[above != below]
    return float(gaps.min()) if gaps.size else math.inf


def median_gap(scores: np.ndarray) -> float:
    """Smallest non-zero distance of a content token's score to the content median (M2IB's
    text protocol keeps the tokens strictly above it)."""
    content = np.asarray(scores, dtype=np.float64)[1:-1]
    if content.size == 0:
        return math.inf
    d = np.abs(content - np.percentile(content, 50))
    d = d[d > 0]
    return float(d.min()) if d.size else math.inf


def pointing_gap(scores: np.ndarray, mask: np.ndarray) -> float:
    """|top map value inside the mask − top value outside|: how far the pointing game's verdict
    is from flipping."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = fit_mask(mask, scores.shape)
    if mask.all() or not mask.any():
        return math.inf
    return abs(float(scores[mask].max() - scores[~mask].max()))


def map_noise(att, model: ClipModel, tol: Tolerances) -> float:
    """Noise of one [0, 1] map's values: the raw map's (``raw_rtol`` × its largest magnitude)
    divided by the span min-max stretches to 1 (the patches' upsampled span on the image side,
    the tokens' on the text side). Large for a map whose span is small beside its magnitude:
    min-max amplifies its rounding."""
    raw = np.asarray(att.raw, dtype=np.float64)
    values = raw_pixel_map(att.raw, model.grid, model.image_size) if att.side == "image" else raw
    span = float(np.max(values) - np.min(values)) if values.size else 0.0
    mag = float(np.abs(raw).max()) if raw.size else 0.0
    return math.inf if span <= 0 or not math.isfinite(span) else tol.raw_rtol * mag / span


def energy_allowed(scores: np.ndarray, mask: np.ndarray, energy: float, noise: float) -> float:
    """Allowed |Δ| of an energy-in-mask value (× 100) when every map value moves by up to
    ``noise``: ``100 · noise · (N_in + E·N) / S`` (``S`` the map's positive mass, ``N_in`` /
    ``N`` the mask's and the map's pixels, ``E`` the share)."""
    pos = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    mask = fit_mask(mask, pos.shape)
    total = float(pos.sum())
    if not total > 0:
        return 0.0
    return 100.0 * noise * (mask.sum() + energy / 100.0 * pos.size) / total


def fragile_columns(row: dict[str, Any], att, model: ClipModel, mask: np.ndarray | None,
                    tol: Tolerances, regions: dict[str, np.ndarray] | None = None
                    ) -> dict[str, str]:
    """Columns of a recomputed ``row`` whose value is decided by a margin within the measured
    noise, each with the margin in words. ``att``: the recomputed attribution; ``mask``: the
    pair's ground-truth mask; ``regions``: the cue world's regions."""
    out: dict[str, str] = {}
    noise = map_noise(att, model, tol)

    def s_noise(c0: str, c1: str) -> float:
        return tol.of(c0) * abs(row[c0]) + tol.of(c1) * abs(row[c1])

    if "img_s0" in row:
        margin = row["img_s1"] - row["img_s0"]
        if abs(margin) <= s_noise("img_s0", "img_s1"):
            out["img_conf_incr"] = f"s1 - s0 = {margin:.3g}"
        gap = curve_boundary_gap(att.scores)
        if gap <= noise:
            for c in ("img_insertion", "img_deletion"):
                out[c] = f"a curve step boundary's value gap is {gap:.3g}"
        if "img_insertion_rise" in row:  # RISE's steps: one image row each
            h, w = np.shape(att.scores)
            gap = curve_boundary_gap(att.scores, rise_counts(h * w, w))
            if gap <= noise:
                for c in ("img_insertion_rise", "img_deletion_rise"):
                    out[c] = f"a RISE curve step boundary's value gap is {gap:.3g}"
        raw = raw_pixel_map(att.raw, model.grid, model.image_size)
        span = _rel_span(raw)
        if span <= DEGENERATE_BAND * FLOAT_NOISE_RTOL:  # the whole map may flip to constant
            return {c: f"the raw map's relative range is {span:.3g}" for c in row}
        peak = float(np.max(raw)) / max(float(np.abs(raw).max()), 1e-300)
        if abs(peak) <= DEGENERATE_BAND * FLOAT_NOISE_RTOL:
            out["degenerate_raw"] = f"the raw map's largest value is {peak:.3g} of its magnitude"
        if mask is not None:
            gap = pointing_gap(att.scores, mask)
            if gap <= noise:
                out["pointing"] = f"top inside - top outside the mask = {gap:.3g}"
        for region, region_mask in (regions or {}).items():
            gap = pointing_gap(att.scores, region_mask)
            if gap <= noise:
                out[f"use_point_{region}"] = (f"top inside - top outside the {region} = "
                                              f"{gap:.3g}")
    else:
        for p in TEXT_PROTOCOLS:
            if f"txt_s0_{p}" in row:
                margin = row[f"txt_s1_{p}"] - row[f"txt_s0_{p}"]
                if abs(margin) <= s_noise(f"txt_s0_{p}", f"txt_s1_{p}"):
                    out[f"txt_conf_incr_{p}"] = f"s1 - s0 = {margin:.3g}"
        if "txt_s0_m2ib" in row:
            gap = median_gap(att.scores)
            if gap <= noise:
                for c in ("txt_s1_m2ib", "txt_conf_drop_m2ib", "txt_conf_incr_m2ib"):
                    out[c] = f"a token's distance to the median is {gap:.3g}"
        span = _rel_span(np.asarray(att.scores)[1:-1])
        if span <= DEGENERATE_BAND * FLOAT_NOISE_RTOL:
            out["degenerate"] = f"the content tokens' relative range is {span:.3g}"
        for c in ("text_gt", "text_gt_word"):
            margin = row.get(f"{c}_margin")
            if margin is not None and abs(margin) <= 2 * noise:
                out[c] = f"margin {margin:.3g}"
    return out


# --- comparing one value ---------------------------------------------------------------------

def drop_allowed(column: str, row: dict[str, Any], tol: Tolerances) -> float:
    """Allowed |Δ| of a Confidence Drop: the noise of s0 and s1, × 100."""
    if column.startswith("img_"):
        c0, c1 = "img_s0", "img_s1"
    else:
        p = column[len("txt_conf_drop_"):]
        c0, c1 = f"txt_s0_{p}", f"txt_s1_{p}"
    if c0 not in row or c1 not in row:
        return tol.of(column) * abs(row[column])
    return 100.0 * (tol.of(c0) * abs(row[c0]) + tol.of(c1) * abs(row[c1]))


def compare(column: str, stored: Any, now: Any, row: dict[str, Any], tol: Tolerances
            ) -> str | None:
    """Why ``stored`` and the recomputed ``now`` of ``column`` differ beyond the tolerances
    (``None`` when they agree). ``row``: the whole recomputed row (for derived columns)."""
    if isinstance(stored, bool) or isinstance(now, bool) or isinstance(stored, str):
        return None if stored == now else "differs"
    if stored is None or now is None:
        return None if (stored is None) == (now is None) else "one is missing"
    a, b = float(stored), float(now)
    if math.isnan(a) or math.isnan(b):
        return None if math.isnan(a) == math.isnan(b) else "one is NaN"
    if column.endswith("_conf_incr") or "_conf_incr_" in column or column.startswith(
            "use_point_") or column in ("pointing", "text_gt", "text_gt_word", "degenerate",
                                        "degenerate_raw", "mask_area"):
        return None if a == float(round_sig(b)) else "the outcome differs"
    if "_conf_drop" in column:
        allowed = max(drop_allowed(column, row, tol), quantum(a))
    else:
        allowed = tol.allowed(column, a, b, row)
    diff = abs(a - float(round_sig(b)))
    # (1 + 1e-9): a difference of exactly one rounding step is not lost to binary rounding
    if diff <= allowed * (1 + 1e-9):
        return None
    return f"|difference| {diff:.3g} > {allowed:.3g} allowed"


# --- recomputing rows ------------------------------------------------------------------------

@dataclass
class Recomputed:
    """One stored row and its recomputation (with the attribution, for the margins)."""

    line: int
    stored: dict[str, Any]
    new: dict[str, Any]
    att: Any = None
    mask: np.ndarray | None = None
    regions: dict[str, np.ndarray] | None = None  # the cue world's regions (use_* columns)


def audit_sample(rows: Sequence[dict[str, Any]], pairs: int = 2, seed: int = 0
                 ) -> list[int]:
    """Row numbers of the audited sample: per ``(method, side, params)`` group, ``pairs`` rows
    drawn with a generator seeded by ``seed`` (all of them when the group is smaller)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["method"], r["side"], r["params"]), []).append(i)
    rng = np.random.default_rng(seed)
    out = []
    for key in sorted(groups):
        idx = groups[key]
        out += sorted(int(i) for i in rng.choice(idx, size=min(pairs, len(idx)), replace=False))
    return out


def definitions_changed(path: Path, meta: dict[str, Any]) -> Mismatch | None:
    """The whole-file mismatch of a store file generated under other metric definitions than
    the code's (:func:`nibcore.store.stale_metrics_version`: the sidecar's version against
    :data:`nibcore.metrics.METRICS_VERSION`, for files that hold metrics); None otherwise.

    Args:
        path: the store file.
        meta: its sidecar's contents.
    """
    stored = stale_metrics_version(meta)
    if stored is None:
        return None
    return Mismatch(path.name, None, None, None, None, None, detail=(
        f"metric definitions changed since this file was generated: regenerate (generated "
        f"with metrics version {stored}, the code's is {METRICS_VERSION})"))


def _check_file(path: Path, model: ClipModel, meta: dict[str, Any],
                rows: list[dict[str, Any]]) -> list[Mismatch]:
    """Whole-file mismatches: another model, or method parameters the code no longer has."""
    out = []
    for k, v in model_hashes(model).items():
        if meta.get(k) != v:
            out.append(Mismatch(path.name, None, None, None, None, None, detail=(
                f"model {k} is {v} now but {meta.get(k)} in the sidecar: the rows were "
                f"computed with another model")))
    seen = set()
    for i, r in enumerate(rows):
        key = f"{r['method']} {r['params']}"
        if key in seen:
            continue
        seen.add(key)
        stored = meta["params"].get(key)
        if stored is None:
            out.append(Mismatch(path.name, None, None, None, None, None, detail=(
                f"line {i + 1} ({r['id']}, {r['method']}, {r['side']}) has parameters "
                f"{r['params']} the sidecar does not list")))
            continue
        now = resolved_params(r["method"], json.loads(r["params"]))
        if now != stored:
            diff = {k: (stored.get(k), now.get(k)) for k in set(stored) | set(now)
                    if stored.get(k) != now.get(k)}
            out.append(Mismatch(path.name, None, None, None, None, None, detail=(
                f"{r['method']} parameters changed since the rows were computed (stored, now): "
                f"{diff}")))
    return out


def recompute(path: Path, model: ClipModel, meta: dict[str, Any], rows: list[dict[str, Any]],
              pairs: int = 2, seed: int = 0, noise: float | None = None
              ) -> Iterator[Recomputed]:
    """Recompute the audited sample of one store file, row by row (``noise``: a [0, 1] map's,
    for the randomisation check's bounds; see :func:`nibcore.sanity.rank_swap_bound`)."""
    if meta.get("check", "evaluate") == "randomisation":
        yield from _recompute_randomisation(path, model, meta, rows, pairs, seed, noise)
        return
    from .datasets import load_dataset
    from .evaluation import rise_classes, score_pairs
    from .inputs import prepare_images

    dataset = load_dataset(meta["dataset"])
    protocols = meta["text_protocols"]
    classes = rise_classes(model, dataset, meta.get("curve_protocols", ["ours"]))
    for i in audit_sample(rows, pairs, seed):
        r = rows[i]
        pair = dataset[int(r["index"])]
        if pair.id != r["id"] or pair.text != r["text"]:
            raise AuditError(f"{path.name}: line {i + 1}: dataset index {r['index']} is now "
                             f"{pair.id} {pair.text!r}, stored {r['id']} {r['text']!r}")
        pixels = prepare_images(model, [pair.image])
        ids = model.tokenize([pair.text])
        scored, atts = score_pairs(model, r["method"], r["side"], json.loads(r["params"]),
                                   [pair], pixels, ids, protocols, warm=False,
                                   class_features=classes)
        yield Recomputed(i + 1, r, scored[r["side"]][0], atts[r["side"]][0],
                         pair.meta.get("mask"), pair.meta.get("regions"))


def _recompute_randomisation(path: Path, model: ClipModel, meta: dict[str, Any],
                             rows: list[dict[str, Any]], pairs: int, seed: int,
                             noise: float | None) -> Iterator[Recomputed]:
    """Every row of ``pairs`` seeded pairs of a randomisation file (all methods and sides)."""
    from .datasets import load_dataset
    from .store import Run, randomisation_rows

    kws = {m: json.loads(kw) for m, kw in {r["method"]: r["params"] for r in rows}.items()}
    run = Run(tuple(kws), params={m: kw for m, kw in kws.items() if kw})  # file's method order
    ids = sorted({r["id"] for r in rows})
    chosen = np.random.default_rng(seed).choice(len(ids), size=min(pairs, len(ids)),
                                                replace=False)
    dataset = load_dataset(meta["dataset"])
    for pid in sorted(ids[int(k)] for k in chosen):
        mine = {(r["method"], r["side"], r["kind"], r["top"]): (i, r)
                for i, r in enumerate(rows) if r["id"] == pid}
        ref = next(r for _, r in mine.values() if r["kind"] == "other pair")
        pair, partner = dataset[int(ref["index"])], dataset[int(ref["partner_index"])]
        if pair.id != pid or partner.id != ref["partner"]:
            raise AuditError(f"{path.name}: dataset indices {ref['index']}, "
                             f"{ref['partner_index']} are now {pair.id}, {partner.id}; stored "
                             f"{pid}, {ref['partner']}")
        new = randomisation_rows(model, run, meta["seed"], [pair], [ref["index"]], [partner],
                                 [ref["partner_index"]], noise=noise)
        if len(new) != len(mine):
            raise AuditError(f"{path.name}: {pid} has {len(mine)} stored rows but "
                             f"{len(new)} recomputed")
        for r in new:
            k = (r["method"], r["side"], r["kind"], r["top"])
            if k not in mine:
                raise AuditError(f"{path.name}: {pid}: row {k} is computed now but not stored")
            i, old = mine[k]
            yield Recomputed(i + 1, old, {k: r[k] for k in ("spearman", "rank_bound")
                                          if k in r})


# --- the audit -------------------------------------------------------------------------------

def noise_bounds(rec: Recomputed, model: ClipModel, tol: Tolerances) -> dict[str, float]:
    """Columns audited through the noise of the maps they are computed from: the allowed
    |Δ| of each (energies from the map's noise, the randomisation check's correlations from
    the near-tied neighbours of its two maps)."""
    new, att = rec.new, rec.att
    out = {}
    if "rank_bound" in new:
        out["spearman"] = float(new["rank_bound"])
    if att is not None and rec.mask is not None and "energy" in new:
        out["energy"] = energy_allowed(att.scores, rec.mask, new["energy"],
                                       map_noise(att, model, tol))
        raw = np.asarray(att.raw, dtype=np.float64)
        pixels = raw_pixel_map(att.raw, model.grid, model.image_size)
        out["energy_pos"] = energy_allowed(pixels, rec.mask, new["energy_pos"],
                                           tol.raw_rtol * float(np.abs(raw).max()))
    for region, mask in (rec.regions or {}).items() if att is not None else ():
        column = f"use_density_{region}"
        if column in new:  # a density is an energy (× 100) over the region's area share
            area = float(fit_mask(mask, np.shape(att.scores)).mean())
            out[column] = energy_allowed(att.scores, mask, 100.0 * area * new[column],
                                         map_noise(att, model, tol)) / (100.0 * area)
    return out


def check_row(name: str, rec: Recomputed, model: ClipModel, tol: Tolerances) -> AuditReport:
    """Compare one recomputed row with the stored one."""
    report = AuditReport(checked=1)
    r, new = rec.stored, rec.new
    fragile = (fragile_columns(new, rec.att, model, rec.mask, tol, rec.regions)
               if rec.att is not None else {})
    bounds = noise_bounds(rec, model, tol)
    for col, value in r.items():
        if col not in new or col in UNAUDITED:
            continue
        why = compare(col, value, new[col], new, tol)
        if why is not None and col in bounds and value is not None and new[col] is not None:
            if abs(float(value) - float(round_sig(float(new[col])))) <= bounds[col] * (1 + 1e-9):
                why = None
        if why is None:
            continue
        m = Mismatch(name, rec.line, r.get("id"), r.get("method"), r.get("side"), col, value,
                     round_sig(float(new[col])) if new[col] is not None else None,
                     fragile.get(col, why))
        (report.excused if col in fragile else report.mismatches).append(m)
    missing = [c for c in new if c not in r and c not in UNAUDITED and c != "rank_bound"]
    if missing:
        report.mismatches.append(Mismatch(name, rec.line, r.get("id"), r.get("method"),
                                          r.get("side"), None, detail=(
                                              f"columns {missing} are computed now but not "
                                              f"stored")))
    return report


@lru_cache(maxsize=1)
def _default_tolerances() -> Tolerances:
    return Tolerances.load()


def audit(path: str | Path, model: ClipModel | None = None, pairs: int = 2, seed: int = 0,
          log: Callable[[str], Any] = print, tolerances: Tolerances | None = None
          ) -> AuditReport:
    """Recompute the audited sample of one store file and collect every mismatch.

    Args:
        path: the store file (``*.jsonl``; its ``.meta.json`` sidecar beside it).
        model: the model the rows were computed with (default: the sidecar's, loaded).
        pairs: pairs recomputed per ``(method, side, params)`` group.
        seed: seed of the sample.
        log: where the one-line summary goes.
        tolerances: default: ``tolerances.json`` of the store.
    """
    from .models import load_model

    path = Path(path)
    tol = tolerances or _default_tolerances()
    meta = read_meta(path)
    changed = definitions_changed(path, meta)
    if changed is not None:
        log(f"audit {path.name}: FAILED before recomputing: {changed}")
        return AuditReport(mismatches=[changed])
    if model is None:
        model = load_model(meta["model"])
    rows = read_rows(path)
    report = AuditReport(mismatches=_check_file(path, model, meta, rows))
    if report.mismatches:
        log(f"audit {path.name}: FAILED before recomputing: {report.mismatches[0]}")
        return report
    try:
        for rec in recompute(path, model, meta, rows, pairs, seed, tol.map_atol):
            report.extend(check_row(path.name, rec, model, tol))
    except AuditError as err:
        report.mismatches.append(Mismatch(path.name, None, None, None, None, None,
                                          detail=str(err).split(": ", 1)[-1]))
    state = ("all within the tolerances" if report.ok
             else f"{len(report.mismatches)} MISMATCHED value(s)")
    extra = (f"; {len(report.excused)} flip(s) excused by a margin within the noise"
             if report.excused else "")
    log(f"audit {path.name}: {report.checked} of {len(rows)} rows recomputed, {state}{extra}")
    return report


def audit_all(paths: Sequence[str | Path] | None = None, pairs: int = 2, seed: int = 0,
              log: Callable[[str], Any] = print, tolerances: Tolerances | None = None
              ) -> AuditReport:
    """:func:`audit` every store file (default: all ``*.jsonl`` in :func:`store_dir`)."""
    from .models import load_model

    paths = [Path(p) for p in paths] if paths else sorted(Path(store_dir()).glob("*.jsonl"))
    models: dict[str, ClipModel] = {}
    total = AuditReport()
    for p in paths:
        name = read_meta(p)["model"]
        if name not in models:
            models[name] = load_model(name)
        total.extend(audit(p, models[name], pairs, seed, log, tolerances))
    return total
