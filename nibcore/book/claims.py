"""The paper's claims as data, and the rule that gives each one a verdict on this build's numbers.

The claims live in ``data/paper_claims.csv`` (installed as ``nibcore._bundled``): one row per
figure of the abstract, bold cell of Table 2 and comparative sentence of §5–§6 and the
appendices, with the verbatim ``quote``, the paper's value and a machine-readable ``test``:

* ``better`` / ``higher`` / ``lower`` — ``subject`` against each of ``versus`` (``*``: every
  other method of Table 2) on each of ``metrics``: better in the metric's direction, or simply a
  higher / lower value; ``mostly`` — better in most of those comparisons (a sentence that says
  "generally"); ``tie`` — the same value; ``shared_best`` — the subjects tie and each is better
  than every other method; ``differs`` — a change in either direction;
  ``fewer_passes`` — fewer forward + backward passes; ``magnitude`` — a number of the paper's
  model; ``rederive`` — an abstract percentage; ``faithful`` — the map's values rank regions
  by how much the model uses them, on the cue world whose evidence is measured by intervention
  (:mod:`nibcore.faithfulness`: Spearman ρ between the map's density gap and the effect gap,
  reproduced when its interval lies above 0); ``none`` — a sentence without a criterion.
* A subject is a method key (``nib``), or a setting of a sweep: ``num_steps=20`` (Table 3),
  ``layer=9`` (Table 4, the paper's 12-block numbering) or ``beta=0.9`` (Table 5).

Each claim is checked twice. **Against the paper's own tables** (:func:`paper_check`): the same
test on the printed numbers, and every number the sentence states (a gap "by 0.1732 units", a
value "(0.9012)") against the table. A table that shows the opposite (a claimed lead where the
table has the other method strictly ahead; a tie where it has two different numbers; for
"generally", no majority of its comparisons) makes the verdict "the paper contradicts itself".
**On the scenes** (:func:`compare`): every comparison is paired (the same pairs on both sides),
with a bootstrap interval of the difference oriented so that a positive value is what the paper
claims; :func:`interval_verdict` turns it into "reproduced" (the interval lies above 0), "not
reproduced" (below) or "not distinguishable" (it contains 0), and :func:`combine` joins the
comparisons of one claim (one against it: not reproduced; all for it: reproduced; for
"generally", :func:`combine_mostly`: a strict majority either way). Absolute numbers of the
paper's model are "not comparable here (different model)", with the Colab recipe that would
test them.

The abstract's percentages are re-derived from Table 2 first (:func:`rederive`): a family of
plausible formulas (NIB's gain over M2IB / the best / the second-best / the mean baseline / each
baseline, relative to the baseline's value, NIB's or the larger of the two, averaged over the
datasets and the side's metrics) is computed, and a formula re-derives a figure when it gives
the printed digits.
"""

from __future__ import annotations

import html as _html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..columns import label, lower_is_better, side_of
from ..models import bundled_file
from ..stats import N_BOOT, bootstrap_ci, fmt, interval, paired
from .paper import DISPLAY, PAPER_METRICS, PAPER_ORDER, SHORT_METRICS, paper_table

#: The claims file in the bundled data.
CLAIMS_FILE = "paper_claims.csv"
#: Its columns, in order.
COLUMNS = ("id", "section", "quote", "paper_value", "kind", "test", "subject", "versus",
           "metrics", "datasets", "stated", "stated_as", "how", "chapter")
#: What a claim is about.
KINDS = ("ordering", "relative effect", "absolute magnitude", "speed", "qualitative")
#: The tests a claim can name (see the module's docstring).
TESTS = ("better", "mostly", "higher", "lower", "tie", "shared_best", "differs",
         "fewer_passes", "magnitude", "rederive", "faithful", "none")
#: The paper's three datasets, in its order.
DATASETS = ("Conceptual Captions", "ImageNet", "Flickr8k")

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_DISTINGUISHABLE = "not distinguishable"
NOT_COMPARABLE = "not comparable here (different model)"
CONTRADICTS = "the paper contradicts itself"
NOT_REDERIVED = "cannot be re-derived from Table 2"
NO_CRITERION = "no testable criterion"
#: Every verdict, in the order the chapter counts them.
VERDICTS = (REPRODUCED, NOT_DISTINGUISHABLE, NOT_REPRODUCED, CONTRADICTS, NOT_REDERIVED,
            NOT_COMPARABLE, NO_CRITERION)

#: The paper's model, for the recipes (the chapters' parameters).
PAPER_MODEL = {"MODEL": "ViT-B-32-quickgelu", "PRETRAINED": "openai"}
#: The paper's layers of Table 4, mapped onto our towers by relative depth.
PAPER_LAYERS = (3, 6, 9)

#: Sweeps: the setting's name in a claim -> (our frame, its column, the paper's table, its
#: column).
SWEEPS = {"num_steps": ("steps", "num_steps", 3, "num_steps"),
          "layer": ("layers", "paper_layer", 4, "target_layer"),
          "beta": ("beta", "beta", 5, "beta")}

#: Protocol details the paper's text does not give, and the file of ours that implements them:
#: key -> (what, file).
CODE_NOTES = {
    "imagenet": ("The paper says \"ImageNet\"; the authors' code loads Tiny-ImageNet-200 "
                 "validation, the first 5 images of each of its 200 classes (1000 pairs).",
                 "nibcore/datasets.py"),
    "pairs": ("About 1000 pairs per dataset (Conceptual Captions about 2000, inferred from the "
              "table's decimals): from the authors' code, not the paper's text.",
              "nibcore/datasets.py"),
    "rise": ("RISE with 6000 image masks (grid 8, p = 0.1) and 200 text masks: from the "
             "authors' code, not the paper's text.", "nibcore/methods/rise.py"),
    "text": ("The text Confidence Drop / Increase protocol (start and end tokens removed, each "
             "token's embedding row scaled by its map value): from the authors' code; §5.3 does "
             "not define it.", "nibcore/metrics.py"),
    "m2ib": ("M2IB with β = 0.1, 10 noise draws, 10 Adam steps at lr 1: from M2IB's and the "
             "authors' code; the paper does not state the β of Table 2.",
             "nibcore/methods/m2ib.py"),
    "layer": ("\"Layer 9\" is the hidden state entering block index 9 (0-based): from the "
              "authors' code; our blocks are at the same relative depth.",
              "nibcore/base.py"),
    "schedule": ("NIB's λ_i = i/n, i = 1..n (a right Riemann sum from 0): from the authors' "
                 "code; the paper says only \"linear interpolation\".", "nibcore/methods/nib.py"),
    "fps": ("FPS: the paper defines neither the unit nor the hardware; ours are attributed "
            "pairs per second (both maps) on the machine the store names.",
            "nibcore/store/__init__.py"),
}


# --- the claims file ----------------------------------------------------------------------------

def claims_path() -> Path:
    """``data/paper_claims.csv`` of a clone, or the installed package data."""
    return bundled_file(CLAIMS_FILE)


def _split(value: Any) -> list[str]:
    """``"a;b"`` -> ``["a", "b"]`` (empty or NaN -> ``[]``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [v.strip() for v in str(value).split(";") if v.strip()]


def load_claims(path: str | Path | None = None) -> pd.DataFrame:
    """The claims (every column a string; empty cells are ``""``), checked: known kinds, tests,
    metrics and datasets, unique ids.

    Args:
        path: a claims CSV; default the bundled ``paper_claims.csv``.
    """
    path = Path(path) if path is not None else claims_path()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {list(COLUMNS)}")
    problems = []
    if frame["id"].duplicated().any():
        problems.append(f"duplicate ids {sorted(frame['id'][frame['id'].duplicated()])}")
    metrics = set(PAPER_METRICS) | {"fps", "passes"}
    for row in frame.itertuples():
        if row.kind not in KINDS:
            problems.append(f"{row.id}: unknown kind {row.kind!r}")
        if row.test not in TESTS:
            problems.append(f"{row.id}: unknown test {row.test!r}")
        for m in _split(row.metrics):
            if m not in metrics:
                problems.append(f"{row.id}: unknown metric {m!r}")
        if row.datasets != "all" and not set(_split(row.datasets)) <= set(DATASETS):
            problems.append(f"{row.id}: unknown dataset(s) in {row.datasets!r}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return frame


def claim_datasets(claim: Any) -> list[str]:
    """The paper's datasets a claim is about (``"all"`` -> the three)."""
    return list(DATASETS) if claim.datasets == "all" else _split(claim.datasets)


# --- the verdict rule ---------------------------------------------------------------------------

def interval_verdict(low: float, high: float, claim: str = "positive") -> str:
    """The verdict of one comparison from the 95 % interval of its effect, oriented so that a
    positive effect is what the paper claims.

    Args:
        low: the interval's lower end.
        high: its upper end.
        claim: ``"positive"`` (an effect in the claimed direction: reproduced when the interval
            lies above 0, not reproduced below 0, else not distinguishable), ``"zero"`` (a tie:
            reproduced when the interval contains 0, else not reproduced) or ``"nonzero"`` (a
            change either way: reproduced when the interval excludes 0, else not
            distinguishable). An undefined interval (NaN) is not distinguishable.
    """
    if claim not in ("positive", "zero", "nonzero"):
        raise ValueError(f"claim must be 'positive', 'zero' or 'nonzero', got {claim!r}")
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_DISTINGUISHABLE
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is reversed")
    if claim == "zero":
        return REPRODUCED if low <= 0 <= high else NOT_REPRODUCED
    if claim == "nonzero":
        return REPRODUCED if (low > 0 or high < 0) else NOT_DISTINGUISHABLE
    if low > 0:
        return REPRODUCED
    if high < 0:
        return NOT_REPRODUCED
    return NOT_DISTINGUISHABLE


def combine(verdicts: Iterable[str]) -> str:
    """One verdict for a claim made of several comparisons: not reproduced if any comparison is
    not, reproduced if all are, else not distinguishable.

    Args:
        verdicts: the comparisons' verdicts (from :func:`interval_verdict`).
    """
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("a claim needs at least one comparison")
    unknown = set(verdicts) - {REPRODUCED, NOT_REPRODUCED, NOT_DISTINGUISHABLE}
    if unknown:
        raise ValueError(f"not a comparison's verdict: {sorted(unknown)}")
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_DISTINGUISHABLE


def combine_mostly(verdicts: Iterable[str]) -> str:
    """One verdict for a claim that holds "generally": reproduced when more than half of its
    comparisons are, not reproduced when more than half are not, else not distinguishable.

    Args:
        verdicts: the comparisons' verdicts (from :func:`interval_verdict`).
    """
    verdicts = list(verdicts)
    combine(verdicts)  # the same checks
    for verdict in (REPRODUCED, NOT_REPRODUCED):
        if 2 * verdicts.count(verdict) > len(verdicts):
            return verdict
    return NOT_DISTINGUISHABLE


def _orientation(test: str, metric: str) -> tuple[int, str]:
    """``(sign, claim)``: the sign that turns A − B into the claimed effect, and the claim type
    of :func:`interval_verdict`; the metric's direction is the column registry's."""
    lower_better = lower_is_better(metric)
    if test in ("better", "mostly", "shared_best", "fewer_passes"):
        return (-1 if lower_better else 1), "positive"
    if test == "higher":
        return 1, "positive"
    if test == "lower":
        return -1, "positive"
    if test == "tie":
        return 1, "zero"
    if test == "differs":
        return 1, "nonzero"
    raise ValueError(f"test {test!r} makes no comparison")


# --- units: a method or a sweep setting ---------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """One side of a comparison: a method (``key == "method"``) or a sweep setting."""

    key: str        # "method", "num_steps", "layer" or "beta"
    value: Any      # the method's key or the setting's value

    @property
    def label(self) -> str:
        if self.key == "method":
            return DISPLAY.get(self.value, self.value)
        if self.key == "num_steps":
            return f"{self.value} steps"
        if self.key == "layer":
            return f"layer {self.value}"
        return f"β = {self.value:g}"


def parse_unit(text: str) -> Unit:
    """``"nib"`` -> the method NIB; ``"num_steps=20"``, ``"layer=9"``, ``"beta=0.9"`` -> a
    sweep setting.

    Args:
        text: one entry of a claim's ``subject`` or ``versus``.
    """
    if "=" not in text:
        return Unit("method", text)
    key, value = (s.strip() for s in text.split("=", 1))
    if key not in SWEEPS:
        raise ValueError(f"unknown setting {key!r} in {text!r}; known: {sorted(SWEEPS)}")
    number = float(value)
    return Unit(key, int(number) if key != "beta" else number)


def units(claim: Any, methods: Sequence[str] = PAPER_ORDER) -> tuple[list[Unit], list[Unit]]:
    """The subjects and the units they are compared with (``*``: every method of ``methods``
    that is not a subject).

    Args:
        claim: a row of :func:`load_claims`.
        methods: the methods ``*`` stands for.
    """
    subjects = [parse_unit(s) for s in _split(claim.subject)]
    versus = _split(claim.versus)
    if versus == ["*"]:
        taken = {u.value for u in subjects}
        return subjects, [Unit("method", m) for m in methods if m not in taken]
    return subjects, [parse_unit(s) for s in versus]


# --- the paper's side ---------------------------------------------------------------------------

@dataclass
class PaperTables:
    """The paper's tables this ledger reads, as frames of numbers (:func:`paper_table`)."""

    table2: pd.DataFrame
    sweeps: dict[int, pd.DataFrame]
    passes: pd.DataFrame

    @classmethod
    def load(cls) -> "PaperTables":
        return cls(paper_table(2), {n: paper_table(n) for n in (3, 4, 5)}, paper_table(8))

    def value(self, unit: Unit, metric: str, dataset: str | None) -> float | None:
        """The paper's number for ``unit`` on ``metric`` (``"passes"``: forward + backward of
        Table 8) in ``dataset``; None when the paper has none."""
        if metric == "passes":
            row = self.passes[self.passes["method"] == unit.value]
            return float(row["forward"].iloc[0] + row["backward"].iloc[0]) if len(row) else None
        if unit.key == "method":
            t = self.table2
            hit = t[(t["dataset"] == dataset) & (t["metric"] == metric)
                    & (t["method"] == unit.value)]
            return float(hit["value"].iloc[0]) if len(hit) else None
        _, _, number, column = SWEEPS[unit.key]
        t = self.sweeps[number]
        hit = t[(t["dataset"] == dataset) & np.isclose(t[column].astype(float), unit.value)]
        return float(hit[metric].iloc[0]) if len(hit) and metric in hit else None

    def quoted(self, unit: Unit, metric: str, dataset: str | None) -> list[float]:
        """Every number of the paper's row behind ``unit`` (Table 8: forward and backward)."""
        if metric == "passes":
            row = self.passes[self.passes["method"] == unit.value]
            return [float(v) for v in row[["forward", "backward"]].iloc[0]] if len(row) else []
        value = self.value(unit, metric, dataset)
        return [] if value is None else [value]


def _tolerance(stated: str) -> float:
    """Half a unit in the last printed digit of ``stated`` (plus float slack)."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    return 0.5 * 10.0 ** -decimals + 1e-9


def _num(value: float) -> str:
    """A paper's number as printed (no trailing zeros)."""
    return f"{value:.6g}"


@dataclass
class PaperCheck:
    """The claim checked against the paper's own tables."""

    consistent: bool | None      # None: nothing to check
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        if self.consistent is None:
            return ""
        return "consistent" if self.consistent else "contradicted: " + "; ".join(self.problems)


def _table_name(unit: Unit, metric: str) -> str:
    if metric == "passes":
        return "Table 8"
    return "Table 2" if unit.key == "method" else f"Table {SWEEPS[unit.key][2]}"


def paper_check(claim: Any, tables: PaperTables) -> PaperCheck:
    """Check a claim against the paper's own tables: its test on the printed numbers (every
    dataset it names), and every number it states — a gap (``stated_as == "gap"``), a value
    per subject × dataset × metric (``"value"``), numbers that appear in the table
    (``"quoted"``). Abstract percentages are checked by :func:`rederive` instead; a
    ``faithful`` claim has no table.

    Args:
        claim: a row of :func:`load_claims`.
        tables: the paper's tables.
    """
    if claim.test in ("rederive", "faithful"):
        return PaperCheck(None)
    subjects, versus = units(claim)
    metrics, datasets = _split(claim.metrics), claim_datasets(claim)
    problems: list[str] = []
    notes: list[str] = []
    checked = False
    if claim.test not in ("magnitude", "none"):
        pairs = _comparison_pairs(claim.test, subjects, versus)
        held, against = 0, []
        for ds in datasets if metrics != ["passes"] else [None]:
            for metric in metrics:
                for a, b, test in pairs:
                    av, bv = tables.value(a, metric, ds), tables.value(b, metric, ds)
                    if av is None or bv is None:
                        continue
                    checked = True
                    sign, kind = _orientation(test, metric)
                    effect = sign * (av - bv)
                    tied = abs(av - bv) <= 1e-12
                    where = f"{ds}, " if ds else ""
                    cell = (f"{_table_name(a, metric)} ({where}{_metric_name(metric)}) has "
                            f"{a.label} {_num(av)} and {b.label} {_num(bv)}")
                    wrong = {"positive": effect < 0 and not tied, "zero": not tied,
                             "nonzero": tied}[kind]
                    held += kind == "positive" and effect > 0 and not tied
                    if wrong:
                        against.append(cell)
                    elif kind == "positive" and tied:
                        notes.append(cell)
        total = held + len(against) + len(notes)
        if claim.test == "mostly":
            if total and 2 * held <= total:
                problems += [f"only {held} of its {total} comparisons in the table go its "
                             f"way, against it"] + against
        else:
            problems += against
    stated = _split(claim.stated)
    if stated and claim.stated_as == "gap":
        a, b = subjects[0], versus[0]
        av, bv = (tables.value(a, metrics[0], datasets[0]),
                  tables.value(b, metrics[0], datasets[0]))
        if av is not None and bv is not None:
            checked = True
            if abs(abs(av - bv) - float(stated[0])) > _tolerance(stated[0]):
                problems.append(f"it states a gap of {stated[0]}; {_table_name(a, metrics[0])} "
                                f"gives {_num(abs(av - bv))}")
    elif stated and claim.stated_as == "value":
        cells = [(u, ds, m) for u in subjects for ds in datasets for m in metrics]
        if len(cells) != len(stated):
            raise ValueError(f"{claim.id}: {len(stated)} stated values for {len(cells)} cells")
        for (u, ds, m), s in zip(cells, stated):
            v = tables.value(u, m, ds)
            if v is not None:
                checked = True
                if abs(v - float(s)) > _tolerance(s):
                    problems.append(f"it states {s} for {u.label} ({ds}, {_metric_name(m)}); "
                                    f"{_table_name(u, m)} has {_num(v)}")
    elif stated and claim.stated_as == "quoted":
        found = [x for u in subjects + versus for ds in (datasets if metrics != ["passes"]
                                                         else [None])
                 for m in metrics for x in tables.quoted(u, m, ds)]
        for s in stated:
            checked = True
            if not any(abs(x - float(s)) <= _tolerance(s) for x in found):
                problems.append(f"it quotes {s}, which its table does not hold")
    return PaperCheck(checked and not problems if checked else None, problems, notes)


def _comparison_pairs(test: str, subjects: list[Unit], versus: list[Unit]
                      ) -> list[tuple[Unit, Unit, str]]:
    """The comparisons ``(A, B, test)`` a claim makes."""
    if test == "shared_best":
        out = [(subjects[0], s, "tie") for s in subjects[1:]]
        return out + [(s, v, "better") for s in subjects for v in versus]
    return [(s, v, test) for s in subjects for v in versus]


def _short(metric: str) -> str:
    """A metric's short name for the ledger's cells."""
    return {"passes": "passes", "fps": "time per pair"}.get(metric,
                                                              SHORT_METRICS.get(metric, metric))


def _metric_name(metric: str) -> str:
    return "forward + backward passes" if metric == "passes" else label(metric)


# --- the abstract: re-deriving its percentages from Table 2 -----------------------------------

#: The reference a gain is measured against: name -> words.
REFERENCES = {"m2ib": "M2IB", "best": "the best baseline", "second": "the second-best baseline",
              "mean": "the mean of the baselines", "each": "each baseline (mean of the gains)"}
#: What a gain is divided by: name -> words.
NORMALISERS = {"baseline": "the baseline's value", "nib": "NIB's value",
               "larger": "the larger of the two"}


def _gain(nib: float, ref: float, lower_better: bool, normaliser: str) -> float:
    """NIB's gain over ``ref`` in % (positive: NIB better), divided as ``normaliser`` says."""
    gain = (ref - nib) if lower_better else (nib - ref)
    denominator = {"baseline": ref, "nib": nib, "larger": max(nib, ref)}[normaliser]
    return 100.0 * gain / denominator


def formula_value(cells: Sequence[dict[str, dict[str, float]]], metrics: Sequence[str],
                  reference: str, normaliser: str) -> float:
    """The mean over datasets and ``metrics`` of NIB's gain (:func:`_gain`) over ``reference``.

    Args:
        cells: one dict per dataset: metric -> method -> value (``"nib"`` must be there).
        metrics: the paper's metric names averaged over.
        reference: a key of :data:`REFERENCES`.
        normaliser: a key of :data:`NORMALISERS`.
    """
    gains = []
    for data in cells:
        for metric in metrics:
            values = data[metric]
            nib = values["nib"]
            others = {m: v for m, v in values.items() if m != "nib"}
            lower = lower_is_better(metric)
            if reference == "each":
                gains.append(float(np.mean([_gain(nib, v, lower, normaliser)
                                            for v in others.values()])))
                continue
            ranked = sorted(others.values(), reverse=not lower)  # best first
            ref = {"m2ib": others.get("m2ib", float("nan")), "best": ranked[0],
                   "second": ranked[1] if len(ranked) > 1 else float("nan"),
                   "mean": float(np.mean(list(others.values())))}[reference]
            gains.append(_gain(nib, ref, lower, normaliser))
    return float(np.mean(gains))


#: Short names of the references and normalisers, for tables and figures.
SHORT_FORMULA = {"m2ib": "M2IB", "best": "best", "second": "2nd best", "mean": "mean of 7",
                 "each": "each of 7", "baseline": "÷ baseline", "nib": "÷ NIB",
                 "larger": "÷ larger"}


def formula_short(reference: str, normaliser: str) -> str:
    """``"M2IB ÷ larger"``: a formula's name in a table's index or a figure's label."""
    return f"{SHORT_FORMULA[reference]} {SHORT_FORMULA[normaliser]}"


def formula_words(reference: str, normaliser: str) -> str:
    """``"NIB's gain over M2IB, divided by the larger of the two"``."""
    return f"NIB's gain over {REFERENCES[reference]}, divided by {NORMALISERS[normaliser]}"


def table2_cells(table2: pd.DataFrame) -> list[dict[str, dict[str, float]]]:
    """Table 2 as :func:`formula_value`'s cells: one dict per dataset, in the paper's order."""
    out = []
    for ds in DATASETS:
        part = table2[table2["dataset"] == ds]
        out.append({m: dict(zip(g["method"], g["value"].astype(float)))
                    for m, g in part.groupby("metric", sort=False)})
    return out


def rederive(table2: pd.DataFrame, metrics: Sequence[str], stated: str) -> pd.DataFrame:
    """Every formula of the family on the paper's Table 2: ``reference``, ``normaliser``,
    ``formula`` (words), ``value``, ``error`` (from the stated figure) and ``reproduces``
    (the value rounds to the stated digits), closest first.

    Args:
        table2: the paper's Table 2 (:func:`nibcore.book.paper.paper_table`).
        metrics: the side's metrics (``["fps"]`` for speed).
        stated: the abstract's figure as printed (``"58.83"``).
    """
    cells = table2_cells(table2)
    rows = []
    for ref in REFERENCES:
        for norm in NORMALISERS:
            v = formula_value(cells, metrics, ref, norm)
            rows.append(dict(reference=ref, normaliser=norm, formula=formula_words(ref, norm),
                             value=v, error=abs(v - float(stated)),
                             reproduces=abs(v - float(stated)) <= _tolerance(stated)))
    return pd.DataFrame(rows).sort_values("error", kind="stable").reset_index(drop=True)


# --- our side: the store's rows -----------------------------------------------------------------

@dataclass
class Sources:
    """Our rows: ``scores`` (:func:`nibcore.evaluate` rows of the eight methods, both sides),
    ``timing`` (the timed subset, :func:`nibcore.store.load_timing`), and the sweeps —
    ``steps`` (a ``num_steps`` column), ``layers`` (a ``paper_layer`` column), ``beta`` (a
    ``beta`` column, one row per pair: the mean over M2IB's seeds) and ``use`` (the cue world's
    rows of the model ``use_model``, trained to rely on its cue: :mod:`nibcore.faithfulness`)."""

    scores: pd.DataFrame
    timing: pd.DataFrame | None = None
    steps: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
    beta: pd.DataFrame | None = None
    use: pd.DataFrame | None = None
    use_model: str = "cue"
    label: str = "ours"

    def frame(self, unit: Unit) -> tuple[pd.DataFrame, str]:
        """The frame holding ``unit``'s rows and the column that selects them."""
        if unit.key == "method":
            return self.scores, "method"
        name, column, _, _ = SWEEPS[unit.key]
        frame = getattr(self, name)
        if frame is None:
            raise ValueError(f"no {name} rows: {unit.label} cannot be compared")
        return frame, column


def load_sources(model: Any, name: str = "mini", use_model: str = "cue") -> Sources:
    """Read the results store of model ``name``: Table 2's three files, the timings and the
    three sweeps (layers mapped onto ``model``'s towers by relative depth); and the cue world's
    ``use`` / ``use-rise`` files of ``use_model`` where the store has them.

    Args:
        model: the :class:`nibcore.models.ClipModel` whose towers the paper's layers map onto.
        name: the store's model name.
        use_model: the cue world's model whose rows test the faithfulness claims.
    """
    from .. import store, sweeps
    from .reports import seed_means

    scores = store.load_many(["table2", "table2-rise-text", "table2-rise-image"], name)
    timing = store.load_timing(name)[0] if store.timing_file(name).is_file() else None
    steps = sweeps.with_param(store.load("ablation-steps", name), "num_steps")
    layers = sweeps.by_paper_layer(sweeps.with_param(store.load("ablation-layers", name),
                                                     "layer"), model, PAPER_LAYERS)
    beta = sweeps.with_param(sweeps.with_param(store.load("table5-beta", name), "beta"), "seed")
    beta = seed_means(beta.rename(columns={"seed": "method_seed"}), "beta")
    present = [f for f in ("use", "use-rise")
               if store.meta_file(store.store_file(f, use_model)).is_file()]
    use = store.load_many(present, use_model) if present else None
    n = scores["id"].nunique()
    return Sources(scores, timing, steps, layers, beta, use=use, use_model=use_model,
                   label=f"ours ({name}, held-out scenes, n = {n})")


def pair_values(sources: Sources, unit: Unit, metric: str) -> pd.Series:
    """``unit``'s per-pair values of ``metric``, indexed by pair id: a metric's column on its
    side; ``"seconds"`` (for FPS) the time of both maps of a pair; ``"passes"`` the forward +
    backward inputs per pair on the image side.

    Args:
        sources: our rows.
        unit: a method or sweep setting.
        metric: a paper metric name, ``"seconds"`` or ``"passes"``.
    """
    frame, column = sources.frame(unit)
    mask = np.isclose(frame[column].astype(float), unit.value) if unit.key == "beta" \
        else (frame[column] == unit.value)
    rows = frame[mask]
    if metric == "seconds":
        wide = rows.pivot_table(index="id", columns="side", values="seconds", aggfunc="mean")
        return wide.dropna().sum(axis=1) if {"image", "text"} <= set(wide.columns) \
            else pd.Series(dtype=float)
    rows = rows[rows["side"] == side_of(metric)]
    if metric == "passes":
        per_pair = (rows["fwd_rows"] + rows["bwd_rows"]) / rows["batch"]
        return per_pair.set_axis(rows["id"].to_numpy()).astype(float)
    return rows.set_index("id")[PAPER_METRICS[metric]].dropna().astype(float)


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of A with B on one metric, on the same pairs."""

    a: Unit
    b: Unit
    metric: str
    claim: str          # "positive", "zero" or "nonzero" (:func:`interval_verdict`)
    effect: float       # the claimed effect (positive: as the paper says)
    low: float          # its 95 % interval
    high: float
    n: int
    shown: str          # the difference in the metric's terms, with its interval
    verdict: str


def compare(sources: Sources, a: Unit, b: Unit, metric: str, test: str,
            seed: int = 0) -> Comparison:
    """Compare ``a`` with ``b`` on ``metric`` on the pairs both have: a metric's paired
    difference A − B (bootstrap interval, :func:`nibcore.stats.paired`); FPS as the ratio of
    B's time per pair to A's (bootstrap of the mean log ratio; the verdict turns to "not
    distinguishable" when the timed subset orders the two the other way); passes as the mean
    difference of the counts.

    Args:
        sources: our rows.
        a: the subject.
        b: what it is compared with.
        metric: a paper metric name, ``"fps"`` or ``"passes"``.
        test: the claim's test for this comparison (:data:`TESTS`).
        seed: the bootstrap's seed.
    """
    column = "seconds" if metric == "fps" else metric
    sign, claim = _orientation(test, column)
    x, y = pair_values(sources, a, column), pair_values(sources, b, column)
    common = x.index.intersection(y.index)
    if len(common) < 2:
        raise ValueError(f"{a.label} and {b.label} share {len(common)} pairs on {metric}")
    x, y = x[common].to_numpy(float), y[common].to_numpy(float)
    if metric == "fps":  # A faster: B's time over A's above 1
        logs = np.log(y / x)
        est, lo, hi = bootstrap_ci(logs, seed=seed)
        effect, low, high = est, lo, hi
        shown = (f"time per pair, {b.label} / {a.label}: {math.exp(est):.3g}× "
                 f"[{math.exp(lo):.3g}, {math.exp(hi):.3g}]")
    else:
        p = paired(x, y, seed=seed)
        effect, low, high = (p.diff, p.low, p.high) if sign > 0 else (-p.diff, -p.high, -p.low)
        d = p.diff
        value = f"{d:g} [{d:g}, {d:g}] (the same on every pair)" \
            if np.all(x - y == x[0] - y[0]) else fmt(p.diff, p.low, p.high)
        shown = f"{a.label} − {b.label} ({_short(metric)}): {value}"
        if np.array_equal(x, y) and a.key == b.key == "layer":
            shown += " (one block of this model holds both layers)"
    verdict = interval_verdict(low, high, claim)
    if metric == "fps" and sources.timing is not None:
        timed = _timed_fps(sources.timing)
        fa, fb = timed.get(a.value), timed.get(b.value)
        if fa is not None and fb is not None and verdict != NOT_DISTINGUISHABLE \
                and (fa > fb) != (verdict == REPRODUCED):
            verdict = NOT_DISTINGUISHABLE
            shown += " (the timed subset orders them the other way)"
    return Comparison(a, b, metric, claim, effect, low, high, len(common), shown, verdict)


def _timed_fps(timing: pd.DataFrame) -> dict[str, float]:
    """Pairs per second with both maps, per method, from the timed subset."""
    wide = timing.pivot_table(index="method", columns="side", values="fps")
    both = 1.0 / (1.0 / wide["image"] + 1.0 / wide["text"])
    return {m: float(v) for m, v in both.items()}


def fps_rank(timing: pd.DataFrame, method: str = "nib") -> tuple[int, int, float]:
    """``(rank, of, fps)``: ``method``'s place by pairs per second with both maps in the timed
    subset (1 = fastest), among how many methods, and its value.

    Args:
        timing: the stored timings (:func:`nibcore.store.load_timing`).
        method: the method ranked.
    """
    timed = _timed_fps(timing)
    order = sorted(timed, key=timed.get, reverse=True)
    return order.index(method) + 1, len(order), timed[method]


def _cell(sources: Sources, unit: Unit, metric: str, seed: int) -> tuple[float, float, float,
                                                                         int]:
    """``(value, low, high, n)``: ``unit``'s mean of ``metric`` with its interval; FPS as
    pairs per second (1 / mean seconds per pair) with a bootstrap interval."""
    if metric == "fps":
        secs = pair_values(sources, unit, "seconds").to_numpy(float)
        est, lo, hi = bootstrap_ci(secs, stat=lambda a: 1.0 / a.mean(axis=-1), seed=seed)
        return est, min(lo, hi), max(lo, hi), len(secs)
    values = pair_values(sources, unit, metric).to_numpy(float)
    iv = interval(values, seed=seed)
    return iv.value, iv.low, iv.high, iv.n


def formula_on_pairs(sources: Sources, metrics: Sequence[str], reference: str,
                     normaliser: str, seed: int = 0, n_boot: int = N_BOOT
                     ) -> tuple[float, float, float, int]:
    """``(value, low, high, n)``: :func:`formula_value` on our means (one "dataset": the
    scenes), with a percentile bootstrap over the pairs every method involved has (FPS: pairs
    per second, 1 / mean seconds of both maps).

    Args:
        sources: our rows.
        metrics: the side's metrics (``["fps"]`` for speed).
        reference: a key of :data:`REFERENCES`.
        normaliser: a key of :data:`NORMALISERS`.
        seed: the bootstrap's seed.
        n_boot: bootstrap resamples.
    """
    methods = ["nib", "m2ib"] if reference == "m2ib" else list(PAPER_ORDER)
    series = {(m, metric): pair_values(sources, Unit("method", m),
                                       "seconds" if metric == "fps" else metric)
              for m in methods for metric in metrics}
    common = None
    for s in series.values():
        common = s.index if common is None else common.intersection(s.index)
    mat = np.stack([series[k][common].to_numpy(float) for k in series])  # (cells, n)
    n = mat.shape[1]

    def value(means: np.ndarray) -> float:
        cells = {metric: {} for metric in metrics}
        for (m, metric), v in zip(series, means):
            cells[metric][m] = 1.0 / v if metric == "fps" else v
        return formula_value([cells], metrics, reference, normaliser)

    est = value(mat.mean(axis=1))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = np.array([value(mat[:, i].mean(axis=1)) for i in idx])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return est, float(lo), float(hi), n


# --- the ledger ---------------------------------------------------------------------------------

def recipe(chapter: str) -> str:
    """How to test a claim on the paper's model: the chapter and its Colab parameters."""
    params = ", ".join(f'{k} = "{v}"' for k, v in PAPER_MODEL.items())
    return f"run book/{chapter}.ipynb in Colab with {params}"


def code_notes(claim: Any) -> list[str]:
    """The keys of :data:`CODE_NOTES` behind a claim's protocol."""
    subjects, versus = units(claim)
    methods = {u.value for u in subjects + versus if u.key == "method"}
    keys = {u.key for u in subjects + versus}
    metrics = set(_split(claim.metrics))
    table2 = "method" in keys and claim.test not in ("fewer_passes", "faithful")
    out = []
    if "ImageNet" in claim_datasets(claim) and claim.test != "fewer_passes":
        out.append("imagenet")
    if table2:
        out.append("pairs")
    if "rise" in methods and metrics - {"fps", "passes"}:
        out.append("rise")
    if {"text_conf_drop", "text_conf_incr"} & metrics:
        out.append("text")
    if "m2ib" in methods or "beta" in keys:
        out.append("m2ib")
    if "layer" in keys:
        out.append("layer")
    if "num_steps" in keys:
        out.append("schedule")
    if "fps" in metrics:
        out.append("fps")
    return out


def _binding(comparisons: list[Comparison], verdict: str) -> Comparison:
    """The comparison that decides ``verdict``: the weakest one for it (a tie: the largest
    difference)."""
    pool = [c for c in comparisons if c.verdict == verdict] or comparisons
    return min(pool, key=lambda c: -abs(c.effect) if c.claim == "zero" else
               (c.low if verdict == REPRODUCED else c.effect))


def _names(comparisons: list[Comparison], other: bool = True) -> str:
    labels = list(dict.fromkeys((c.b if other else c.a).label for c in comparisons))
    return ", ".join(labels)


def mean_rank(sources: Sources, unit: Unit, metric: str,
              methods: Sequence[str] = PAPER_ORDER) -> tuple[int, int]:
    """``(rank, of)``: the place of ``unit``'s mean of ``metric`` among ``methods`` on our rows
    (1 = best in the metric's direction; FPS by pairs per second of the scoring run).

    Args:
        sources: our rows.
        unit: a method.
        metric: a paper metric name or ``"fps"``.
        methods: the methods ranked.
    """
    means = {}
    for m in methods:
        if metric == "fps":
            means[m] = -pair_values(sources, Unit("method", m), "seconds").mean()
        else:
            v = pair_values(sources, Unit("method", m), metric).mean()
            means[m] = -v if lower_is_better(metric) else v
    order = sorted(means, key=means.get, reverse=True)
    return order.index(unit.value) + 1, len(order)


def _ours_sentence(claim: Any, comparisons: list[Comparison], verdict: str) -> str:
    """Words for the scenes' side of a comparison claim."""
    by = {v: [c for c in comparisons if c.verdict == v]
          for v in (REPRODUCED, NOT_DISTINGUISHABLE, NOT_REPRODUCED)}
    binding = _binding(comparisons, verdict)
    n = len(comparisons)
    if n == 1:
        c = comparisons[0]
        words = {REPRODUCED: "as claimed", NOT_REPRODUCED: "the other way round",
                 NOT_DISTINGUISHABLE: "not distinguishable at 95 %"}[verdict]
        if c.claim == "zero":
            words = {REPRODUCED: "consistent with a tie (the interval contains 0)",
                     NOT_REPRODUCED: "no tie (the interval excludes 0)"}[verdict]
        if c.claim == "nonzero" and verdict == REPRODUCED:
            words = "a change at 95 %"
        return f"{c.shown} (n = {c.n}): {words}"
    parts = [f"{len(by[REPRODUCED])} of {n} comparisons as claimed"]
    if by[NOT_REPRODUCED]:
        parts.append(f"{len(by[NOT_REPRODUCED])} the other way "
                     f"({_pairs_words(by[NOT_REPRODUCED])})")
    if by[NOT_DISTINGUISHABLE]:
        parts.append(f"{len(by[NOT_DISTINGUISHABLE])} not distinguishable "
                     f"({_pairs_words(by[NOT_DISTINGUISHABLE])})")
    return ", ".join(parts) + f"; decisive: {binding.shown} (n = {binding.n})"


def _rank_words(claim: Any, sources: Sources) -> str:
    """``"; NIB's mean ranks 8th of 8 on Text Conf. Drop ↓"`` for a claim against every other
    method on one metric, else ``""``."""
    metrics = _split(claim.metrics)
    if claim.versus != "*" or len(metrics) != 1 or metrics[0] == "passes":
        return ""
    subject = units(claim)[0][0]
    rank, of = mean_rank(sources, subject, metrics[0])
    worst = " (the worst)" if rank == of else " (the best)" if rank == 1 else ""
    return (f"; {subject.label}'s mean ranks {_ordinal(rank)} of {of}{worst} on "
            f"{_metric_name(metrics[0])}")


def _pairs_words(comparisons: list[Comparison]) -> str:
    """``"vs RISE, FastIG on Image Conf. Drop ↓"``, grouped by metric."""
    groups: dict[str, list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault(c.metric, []).append(c)
    subjects = {c.a.label for c in comparisons}
    out = []
    for metric, cs in groups.items():
        who = ", ".join(dict.fromkeys(
            (f"{c.a.label} vs {c.b.label}" if len(subjects) > 1 else c.b.label) for c in cs))
        out.append(f"{who} on {_metric_name(metric)}")
    return "; ".join(out)


def _magnitude(claim: Any, sources: Sources, tables: PaperTables, seed: int
               ) -> dict[str, Any]:
    unit = units(claim)[0][0]
    metric = _split(claim.metrics)[0]
    value, low, high, n = _cell(sources, unit, metric, seed)
    ours = f"{unit.label} {fmt(value, low, high)} (n = {n})"
    headline = value
    if metric == "fps":
        ours = f"{unit.label} {ours.split(' ', 1)[1]} pairs/s in the scoring run"
        if sources.timing is not None and unit.value in _timed_fps(sources.timing):
            headline = _timed_fps(sources.timing)[unit.value]
            ours += f"; {headline:.3g} pairs/s in the timed subset (no interval: 2 pairs)"
    papers = [tables.value(unit, metric, ds) for ds in claim_datasets(claim)]
    papers = [p for p in papers if p]
    ratio = ""
    if papers:
        r = sorted(headline / p for p in papers)
        ratio = (f"{r[0]:.3g}× the paper's" if len(r) == 1 or r[-1] / r[0] < 1.05 else
                 f"{r[0]:.3g}×–{r[-1]:.3g}× the paper's")
    return dict(value=value, low=low, high=high, n=n, ratio=ratio,
                what=f"{unit.label}, {_metric_name(metric)}", ours=ours)


def ledger(claims: pd.DataFrame, sources: Sources, tables: PaperTables | None = None,
           seed: int = 0) -> pd.DataFrame:
    """Every claim with the paper's check, our comparisons and a verdict.

    Columns: the claim's ``id``, ``section``, ``kind``, ``quote``, ``paper_value``,
    ``paper_check`` (``"consistent"``, ``"contradicted: …"`` or empty), ``scenes`` (the verdict
    on our rows alone), ``verdict``, ``ours`` (the decisive number with its 95 % interval and
    n), ``n``, ``effect`` / ``low`` / ``high`` (the decisive interval: a claimed effect, a
    value or a formula), ``what`` (what that interval is of), ``reason`` (one generated
    sentence), ``notes`` (keys of :data:`CODE_NOTES`), ``recipe``, ``formula`` (abstract
    rows: the formula that re-derives them) and ``scale`` (magnitude rows: ours over the
    paper's, e.g. ``"95.5×–161× the paper's"``).

    Args:
        claims: :func:`load_claims`.
        sources: our rows (:func:`load_sources`).
        tables: the paper's tables (default: :meth:`PaperTables.load`).
        seed: the bootstraps' seed.
    """
    tables = tables or PaperTables.load()
    rederived = _rederivations(claims, tables)
    rows = []
    for claim in claims.itertuples():
        check = paper_check(claim, tables)
        row = dict(id=claim.id, section=claim.section, kind=claim.kind, quote=claim.quote,
                   paper_value=claim.paper_value, paper_check=check.text, scenes="",
                   scale="", notes=code_notes(claim), recipe=recipe(claim.chapter),
                   formula="")
        contradiction = check.consistent is False
        lead = (f"The paper's own tables disagree ({_first(check.problems)})"
                if contradiction else "")
        if claim.test == "none":
            unit, metric = units(claim)[0][0], _split(claim.metrics)[0]
            value, low, high, n = _cell(sources, unit, metric, seed)
            row.update(effect=value, low=low, high=high, n=n,
                       what=f"{unit.label}, {_metric_name(metric)}",
                       ours=f"{unit.label} {fmt(value, low, high)} (n = {n})",
                       verdict=CONTRADICTS if contradiction else NO_CRITERION)
            row["reason"] = (lead + "." if contradiction else
                             "The sentence names no comparison or threshold to test; our "
                             f"value is shown for reference ({unit.label} on "
                             f"{_metric_name(metric)}).")
        elif claim.test == "magnitude":
            m = _magnitude(claim, sources, tables, seed)
            row.update(effect=m["value"], low=m["low"], high=m["high"], n=m["n"],
                       what=m["what"], ours=m["ours"], scale=m["ratio"],
                       verdict=CONTRADICTS if contradiction else NOT_COMPARABLE)
            speed = " on hardware the paper does not name" if "fps" in claim.metrics else ""
            row["reason"] = (lead + "." if contradiction else
                             f"A value of CLIP ViT-B/32 on the paper's data{speed}; ours on the "
                             f"mini model is {m['ratio']}, which says nothing about it: "
                             f"{recipe(claim.chapter)}.")
        elif claim.test == "rederive":
            row.update(_rederive_row(claim, sources, rederived, seed))
        elif claim.test == "faithful":
            row.update(_faithful_row(claim, sources, seed))
        else:
            subjects, versus = units(claim)
            comps = [compare(sources, a, b, metric, test, seed)
                     for metric in _split(claim.metrics)
                     for a, b, test in _comparison_pairs(claim.test, subjects, versus)]
            joined = combine_mostly if claim.test == "mostly" else combine
            scenes = joined(c.verdict for c in comps)
            binding = _binding(comps, scenes)
            ours = _ours_sentence(claim, comps, scenes)
            extra = _rank_words(claim, sources) if _split(claim.metrics) != ["fps"] else ""
            if "fps" in _split(claim.metrics) and sources.timing is not None \
                    and subjects[0].value in _timed_fps(sources.timing):
                rank, of, fps = fps_rank(sources.timing, subjects[0].value)
                extra = (f"; in the timed subset {subjects[0].label} is "
                         f"{_ordinal(rank)} of {of} ({fps:.3g} pairs/s)")
            row.update(scenes=scenes, effect=binding.effect, low=binding.low,
                       high=binding.high, n=binding.n, what=binding.shown,
                       ours=f"{binding.shown} (n = {binding.n})",
                       verdict=CONTRADICTS if contradiction else scenes)
            size = (" (the size of a gap on another model is not comparable here)"
                    if claim.stated_as == "gap" else "")
            scene_words = f"on the scenes {ours}{extra}{size}"
            row["reason"] = (f"{lead}; {scene_words}." if contradiction else
                             f"{scene_words[0].upper()}{scene_words[1:]}.")
        rows.append(row)
    return pd.DataFrame(rows)


def _faithful_row(claim: Any, sources: Sources, seed: int) -> dict[str, Any]:
    """A ``faithful`` claim's verdict on the cue world (:mod:`nibcore.faithfulness`): the
    subject's Spearman ρ between its density gap (cue − object) and the measured effect gap,
    across the pairs of ``sources.use_model``, reproduced when the interval lies above 0."""
    from ..faithfulness import leaderboard

    if sources.use is None:
        raise ValueError(f"claim {claim.id} needs the cue world's rows of the "
                         f"{sources.use_model!r} model: python -m nibcore.store generate use "
                         f"--model {sources.use_model}")
    subject = units(claim)[0][0].value
    board = leaderboard(sources.use, seed=seed).set_index("method")
    if subject not in board.index:
        raise ValueError(f"claim {claim.id}: no cue-world rows of {subject!r}")
    mine = board.loc[subject]
    verdict = interval_verdict(mine.rho_low, mine.rho_high)
    rank = int((board["rho"] > mine.rho).sum()) + 1
    name = DISPLAY.get(subject, subject)
    shown = f"ρ = {fmt(mine.rho, mine.rho_low, mine.rho_high)}"
    follows = {REPRODUCED: "grows with", NOT_REPRODUCED: "shrinks as",
               NOT_DISTINGUISHABLE: "is not distinguishable at 95 % from no relation to"}[verdict]
    reason = (f"On the cue world's {sources.use_model!r} model, whose evidence is measured by "
              f"painting the cue and the object out, {name}'s density gap (cue − object) "
              f"{follows} the cosine each removal costs, across {int(mine.n)} pairs "
              f"({shown}; {_ordinal(rank)} of {len(board)} methods). The sentence defines A "
              f"for any model, so a model of known evidence tests it; ρ is the criterion fixed "
              f"before any method ran on that world (chapter faithfulness).")
    return dict(scenes=verdict, verdict=verdict, effect=float(mine.rho), low=float(mine.rho_low),
                high=float(mine.rho_high), n=int(mine.n),
                what=f"{name}, Spearman ρ (density gap vs effect gap, cue world)",
                ours=f"{name} {shown} (n = {int(mine.n)}, cue world)", reason=reason)


def _first(items: list[str], k: int = 3) -> str:
    """The first ``k`` of ``items`` joined, and how many more there are."""
    more = f"; and {len(items) - k} more" if len(items) > k else ""
    return "; ".join(items[:k]) + more


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _rederivations(claims: pd.DataFrame, tables: PaperTables) -> dict[str, Any]:
    """Per abstract claim, its :func:`rederive` frame, and the formulas that re-derive all of
    them (``"common"``)."""
    out: dict[str, Any] = {}
    common: set[tuple[str, str]] | None = None
    for claim in claims.itertuples():
        if claim.test != "rederive":
            continue
        frame = rederive(tables.table2, _split(claim.metrics), claim.stated)
        out[claim.id] = frame
        hits = {(r.reference, r.normaliser) for r in frame.itertuples() if r.reproduces}
        common = hits if common is None else common & hits
    out["common"] = sorted(common or [])
    return out


def _rederive_row(claim: Any, sources: Sources, rederived: dict[str, Any], seed: int
                  ) -> dict[str, Any]:
    frame = rederived[claim.id]
    hits = frame[frame["reproduces"]]
    common = [f for f in rederived["common"]
              if ((hits["reference"] == f[0]) & (hits["normaliser"] == f[1])).any()]
    if common:
        ref, norm = common[0]
    elif len(hits):
        ref, norm = hits["reference"].iloc[0], hits["normaliser"].iloc[0]
    else:
        ref, norm = frame["reference"].iloc[0], frame["normaliser"].iloc[0]
    paper_v = float(frame[(frame.reference == ref) & (frame.normaliser == norm)]["value"].iloc[0])
    metrics = _split(claim.metrics)
    value, low, high, n = formula_on_pairs(sources, metrics, ref, norm, seed)
    words = formula_words(ref, norm)
    notes = code_notes(claim) + (["m2ib"] if ref == "m2ib" else ["m2ib", "rise"])
    ours = f"{fmt(value, low, high)} % (n = {n})"
    if metrics == ["fps"] and sources.timing is not None:
        timed = _timed_fps(sources.timing)
        if "nib" in timed and (ref != "m2ib" or "m2ib" in timed):
            ours += (f"; timed subset: "
                     f"{formula_value([{'fps': timed}], metrics, ref, norm):.3g} %")
    others = len(hits) - 1
    if not len(hits):
        return dict(scenes="", verdict=NOT_REDERIVED, notes=notes, effect=value, low=low,
                    high=high, n=n, what=f"closest formula on the scenes: {words}", ours=ours,
                    formula=words,
                    paper_check=f"closest formula gives {paper_v:.4g} %",
                    reason=f"No formula of the family gives {claim.stated} % from Table 2: "
                           f"the closest, {words} (mean over datasets and metrics), gives "
                           f"{paper_v:.4g} %; on the scenes it gives {ours}.")
    scenes = interval_verdict(low, high, "positive")
    also = (f" ({others} other formula{'s' if others > 1 else ''} of the family also "
            f"give{'' if others > 1 else 's'} it to the printed digits)" if others > 0 else "")
    k = len(rederived["common"])
    shared = ("" if not common else
              " — the one formula that gives all three abstract figures" if k == 1 else
              f" — one of {k} formulas that give all three abstract figures")
    versus = REFERENCES[ref]
    words_v = {REPRODUCED: f"NIB ahead of {versus}, as claimed",
               NOT_REPRODUCED: f"NIB behind {versus}",
               NOT_DISTINGUISHABLE: "not distinguishable from 0"}[scenes]
    return dict(scenes=scenes, verdict=scenes, notes=notes, effect=value, low=low, high=high,
                n=n, what=f"on the scenes: {words}", ours=ours, formula=words,
                paper_check=f"re-derived: {paper_v:.4g} %",
                reason=f"Re-derived from Table 2 as {words}, averaged over the datasets and "
                       f"the side's metrics: {paper_v:.4f} %{shared}{also}; on the scenes the "
                       f"same formula gives {ours}, {words_v} (the size belongs to another "
                       f"model).")


def verdict_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Claims by ``kind`` (rows, :data:`KINDS` order) and ``verdict`` (columns,
    :data:`VERDICTS` order), with totals.

    Args:
        table: :func:`ledger`.
    """
    counts = pd.crosstab(table["kind"], table["verdict"])
    counts = counts.reindex(index=[k for k in KINDS if k in counts.index],
                            columns=[v for v in VERDICTS if v in counts.columns], fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    counts.columns.name = None
    return counts


def summary_sentence(table: pd.DataFrame) -> str:
    """One generated sentence: how many claims, and how many got each verdict.

    Args:
        table: :func:`ledger`.
    """
    counts = table["verdict"].value_counts()
    parts = [f"{counts[v]} {v}" for v in VERDICTS if v in counts]
    return (f"Of the paper's {len(table)} claims in this ledger: " + ", ".join(parts) + ".")


# --- showing it ---------------------------------------------------------------------------------

#: The ledger's columns as the chapter prints them: (title, width in %).
HTML_COLUMNS = (("claim", 27), ("the paper's value", 12), ("ours: 95 % interval, n", 21),
                ("verdict", 11), ("why (generated)", 29))
_CELL = ("border:1px solid #ddd;padding:0.3em 0.4em;vertical-align:top;text-align:left;"
         "white-space:normal;overflow-wrap:anywhere;")
_COLOURS = {REPRODUCED: "#1a7f37", NOT_REPRODUCED: "#b3261e", NOT_DISTINGUISHABLE: "#8a6d00",
            CONTRADICTS: "#6f42c1", NOT_REDERIVED: "#6f42c1", NOT_COMPARABLE: "#555",
            NO_CRITERION: "#555"}


def ledger_html(table: pd.DataFrame, notes: dict[str, int] | None = None) -> str:
    """The ledger as an HTML table that fits the page's text column (fixed layout, wrapped
    text: no horizontal scrolling): one row per claim, the paper's value labelled as the
    paper's, ours with its interval and n, the verdict and the generated reason.

    Args:
        table: :func:`ledger` (or some of its rows).
        notes: :data:`CODE_NOTES` key -> the number printed for it (default: in the order of
            :data:`CODE_NOTES`, from 1).
    """
    notes = notes or {k: i + 1 for i, k in enumerate(CODE_NOTES)}
    e = _html.escape
    cols = "".join(f'<col style="width:{w}%">' for _, w in HTML_COLUMNS)
    head = "".join(f'<th style="{_CELL}">{e(t)}</th>' for t, _ in HTML_COLUMNS)
    body = []
    for r in table.itertuples():
        marks = "".join(f"<sup>[{notes[k]}]</sup>" for k in r.notes if k in notes)
        colour = _COLOURS.get(r.verdict, "#333")
        claim = (f"<b>{e(r.id)}</b> <small>({e(r.section)}, {e(r.kind)})</small><br>"
                 f"“{e(r.quote)}”")
        cells = [claim, f"<i>paper:</i> {e(r.paper_value)}", f"{e(r.ours)}{marks}",
                 f'<b style="color:{colour}">{e(r.verdict)}</b>', e(r.reason)]
        body.append("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in cells) + "</tr>")
    return (f'<table class="claims-ledger" style="table-layout:fixed;width:100%;'
            f'border-collapse:collapse;font-size:0.78em;line-height:1.3">'
            f"<colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def notes_html(table: pd.DataFrame) -> str:
    """The protocol details behind the ledger's marks: number, detail, our file, the claims it
    touches.

    Args:
        table: :func:`ledger`.
    """
    e = _html.escape
    rows = []
    for i, (key, (what, path)) in enumerate(CODE_NOTES.items(), start=1):
        ids = [r.id for r in table.itertuples() if key in r.notes]
        if not ids:
            continue
        rows.append(f'<tr><td style="{_CELL}">[{i}]</td><td style="{_CELL}">{e(what)}</td>'
                    f'<td style="{_CELL}"><code>{e(path)}</code></td>'
                    f'<td style="{_CELL}">{len(ids)} claims</td></tr>')
    head = "".join(f'<th style="{_CELL}">{t}</th>' for t in ("", "detail", "ours", "touches"))
    return (f'<table style="table-layout:fixed;width:100%;border-collapse:collapse;'
            f'font-size:0.8em"><colgroup><col style="width:6%"><col style="width:62%">'
            f'<col style="width:20%"><col style="width:12%"></colgroup>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def counts_html(counts: pd.DataFrame) -> str:
    """:func:`verdict_counts` as an HTML table that wraps its long headers (fits the column).

    Args:
        counts: :func:`verdict_counts`.
    """
    e = _html.escape
    head = f'<th style="{_CELL}"></th>' + "".join(
        f'<th style="{_CELL}color:{_COLOURS.get(c, "#333")}">{e(c)}</th>'
        for c in counts.columns)
    body = "".join(
        f'<tr><th style="{_CELL}">{e(str(k))}</th>'
        + "".join(f'<td style="{_CELL}text-align:right">{int(v)}</td>' for v in row)
        + "</tr>" for k, row in counts.iterrows())
    return (f'<table style="table-layout:fixed;width:100%;border-collapse:collapse;'
            f'font-size:0.8em"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def rederivation_figure(frames: dict[str, pd.DataFrame], stated: dict[str, str]):
    """One panel per abstract figure: every formula's value on the paper's Table 2, the
    printed figure as a line; the formulas that give it in colour.

    Args:
        frames: abstract claim id -> its :func:`rederive` frame.
        stated: abstract claim id -> the printed figure.
    """
    import matplotlib.pyplot as plt

    from .figures import COLUMN_IN

    fig, axes = plt.subplots(1, len(frames), figsize=(COLUMN_IN, 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    order = [(r, nm) for r in REFERENCES for nm in NORMALISERS]
    labels = [formula_short(r, nm) for r, nm in order]
    for ax, (cid, frame) in zip(axes, frames.items()):
        f = frame.set_index(["reference", "normaliser"]).loc[order]
        colours = ["#1a7f37" if ok else "#bbbbbb" for ok in f["reproduces"]]
        target = float(stated[cid])
        hi = 3 * target  # the axis shows 0 to three times the figure; longer bars are cut
        lo = max(min(0.0, float(f["value"].min())), -hi / 3)
        ax.barh(np.arange(len(f)), f["value"].clip(lo, hi), color=colours)
        for y, v in enumerate(f["value"]):
            if v > hi or v < lo:
                ax.text(hi if v > hi else lo, y, f" {v:.0f} ", va="center", fontsize=6.5,
                        ha="right" if v > hi else "left")
        ax.axvline(target, color="#b3261e", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_title(f"{cid}: paper {stated[cid]} %")
        ax.set_xlabel("formula on Table 2 (%)")
        ax.invert_yaxis()
    axes[0].set_yticks(np.arange(len(order)), labels, fontsize=7)
    fig.tight_layout()
    return fig


def verdict_figure(counts: pd.DataFrame):
    """Claims by kind, stacked by verdict (:func:`verdict_counts` without its totals).

    Args:
        counts: :func:`verdict_counts`.
    """
    import matplotlib.pyplot as plt

    from .figures import COLUMN_IN

    c = counts.drop(index="total", errors="ignore").drop(columns="total", errors="ignore")
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.45 * len(c) + 1.4))
    left = np.zeros(len(c))
    for verdict in c.columns:
        ax.barh(c.index, c[verdict], left=left, color=_COLOURS.get(verdict, "#333"),
                alpha=0.85 if verdict in (NOT_COMPARABLE, NO_CRITERION) else 1.0,
                label=verdict, hatch="//" if verdict == NO_CRITERION else None)
        left += c[verdict].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("claims")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3,
              frameon=False)
    fig.tight_layout()
    return fig
