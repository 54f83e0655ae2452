"""The column registry: every metric's name, label, side, direction and unit, written once.

The evaluation's frame (:func:`nibcore.evaluate`) has one column per metric; the paper names
some of them differently (``text_conf_drop`` is our ``txt_conf_drop_paper``) and reports two that
are not per-pair columns (``fps``, ``passes``). Every module that prints, ranks or audits a metric
reads its :class:`Column` here — metrics, evaluation, store, reports and the chapters — so a
label or a direction cannot drift between them.

``better`` is ``"lower"`` (Confidence Drops, deletion AUCs, passes, seconds), ``"higher"`` or
``None`` (a diagnostic such as the mask's area, which is the chance level of the energy).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The text-side perturbation protocols (:mod:`nibcore.metrics` defines them).
TEXT_PROTOCOLS = ("paper", "m2ib", "clean")

_ARROW = {"lower": " ↓", "higher": " ↑", None: ""}


@dataclass(frozen=True)
class Column:
    """One metric.

    Args:
        name: the column of the evaluation's frame (or the paper's metric name).
        title: what it measures, without direction (``"Image Conf. Drop"``).
        short: a short name for narrow table headers.
        side: ``"image"`` or ``"text"``: the side whose rows hold it; ``None`` for both.
        better: ``"lower"``, ``"higher"`` or ``None`` (no direction).
        unit: what a value is in (``"points"``: 0–100; ``"share"``: 0–1; ``"pairs/s"``; ...).
        kind: how it is computed, for the audit: ``"drop"`` (from two cosines), ``"outcome"``
            (a yes/no scored 0 or 100), ``"auc"``, ``"share"``, ``"count"``, ``"rate"``.
        note: a qualifier printed after the label (``"paper"``, ``"[0,1] map"``).
        column: for the paper's metric names, our column it is computed from.
        cosines: for the drops, the columns of the original and perturbed cosines s0, s1.
    """

    name: str
    title: str
    short: str
    side: str | None
    better: str | None
    unit: str
    kind: str
    note: str = ""
    column: str = ""
    cosines: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        """The printed label: title, arrow (which direction is better), note in brackets."""
        return self.title + _ARROW[self.better] + (f" ({self.note})" if self.note else "")

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"

    @property
    def source(self) -> str:
        """The evaluation column this metric is read from."""
        return self.column or self.name


def _registry() -> dict[str, Column]:
    cols = [
        Column("img_conf_drop", "Image Conf. Drop", "img drop", "image", "lower", "points",
               "drop", cosines=("img_s0", "img_s1")),
        Column("img_conf_incr", "Image Conf. Increase", "img incr", "image", "higher", "points",
               "outcome"),
        Column("img_insertion", "Image Insertion AUC", "insertion", "image", "higher", "points",
               "auc"),
        Column("img_deletion", "Image Deletion AUC", "deletion", "image", "lower", "points",
               "auc"),
        Column("img_insertion_rise", "Image Insertion AUC", "insertion (RISE)", "image",
               "higher", "points", "auc", note="RISE protocol"),
        Column("img_deletion_rise", "Image Deletion AUC", "deletion (RISE)", "image", "lower",
               "points", "auc", note="RISE protocol"),
    ]
    for p in TEXT_PROTOCOLS:
        cols += [
            Column(f"txt_conf_drop_{p}", "Text Conf. Drop", f"text drop ({p})", "text", "lower",
                   "points", "drop", note=p, cosines=(f"txt_s0_{p}", f"txt_s1_{p}")),
            Column(f"txt_conf_incr_{p}", "Text Conf. Increase", f"text incr ({p})", "text",
                   "higher", "points", "outcome", note=p),
        ]
    cols += [
        Column("pointing", "Pointing game", "pointing", "image", "higher", "points", "outcome"),
        Column("energy", "Energy in mask", "energy", "image", "higher", "points", "share",
               note="[0,1] map"),
        Column("energy_pos", "Energy in mask", "energy (raw)", "image", "higher", "points",
               "share", note="raw, positive part"),
        Column("mask_area", "Mask area", "mask area", "image", None, "points", "share",
               note="chance"),
        Column("text_gt", "Text ground truth", "text GT", "text", "higher", "points", "outcome",
               note="phrase"),
        Column("text_gt_word", "Text ground truth", "text GT (word)", "text", "higher",
               "points", "outcome", note="word"),
        # the cue world's ground truth of use (nibcore.faithfulness): per region, the map's
        # density and pointing credit (no direction: good only where the region is used)
        Column("use_density_cue", "Density in the cue", "density (cue)", "image", None,
               "× chance", "share"),
        Column("use_density_object", "Density in the object", "density (object)", "image",
               None, "× chance", "share"),
        Column("use_point_cue", "Pointing into the cue", "point (cue)", "image", None,
               "points", "outcome"),
        Column("use_point_object", "Pointing into the object", "point (object)", "image", None,
               "points", "outcome"),
        Column("point_support", "Pointing into the supporting region", "point (support)",
               "image", "higher", "points", "outcome"),
        # the paper's names (Tables 2-8) and its speed columns
        Column("text_conf_drop", "Text Conf. Drop", "text drop", "text", "lower", "points",
               "drop", column="txt_conf_drop_paper", cosines=("txt_s0_paper", "txt_s1_paper")),
        Column("text_conf_incr", "Text Conf. Increase", "text incr", "text", "higher", "points",
               "outcome", column="txt_conf_incr_paper"),
        Column("fps", "FPS", "FPS", None, "higher", "pairs/s", "rate"),
        Column("seconds", "Seconds per pair", "seconds", None, "lower", "s", "rate"),
        Column("passes", "Passes per pair", "passes", "image", "lower", "passes", "count"),
    ]
    return {c.name: c for c in cols}


#: Every metric by name.
COLUMNS: dict[str, Column] = _registry()

#: The per-pair metric columns of the evaluation's frame, in table order.
METRIC_COLUMNS = tuple(c.name for c in COLUMNS.values() if not c.column and c.kind != "rate"
                       and c.kind != "count")

#: The paper's metric names (its Table 2 rows) -> our columns.
PAPER_METRICS = {n: COLUMNS[n].source for n in ("img_conf_drop", "img_conf_incr",
                                                "text_conf_drop", "text_conf_incr")}

#: The ground-truth metrics, in leaderboard order.
GROUND_TRUTH = ("pointing", "energy", "energy_pos", "mask_area", "text_gt", "text_gt_word")


def column(name: str) -> Column:
    """The registered metric ``name``; a one-line error for an unknown name."""
    try:
        return COLUMNS[name]
    except KeyError:
        raise KeyError(f"unknown metric column {name!r}; known: {', '.join(COLUMNS)}") from None


def label(name: str) -> str:
    """The printed label of ``name``; an unregistered name is printed as it is."""
    return COLUMNS[name].label if name in COLUMNS else name


def labels(names) -> dict[str, str]:
    """``{name: label}`` for ``names`` (registered ones)."""
    return {n: COLUMNS[n].label for n in names}


def lower_is_better(name: str) -> bool:
    """Is a low value of the metric ``name`` good?"""
    return column(name).lower_is_better


def side_of(name: str) -> str | None:
    """The side whose rows hold the metric ``name`` (``None``: both)."""
    return column(name).side


def metric_columns(protocols=TEXT_PROTOCOLS, curve_protocols=("ours", "rise")) -> list[str]:
    """The evaluation's per-pair metric columns for the text ``protocols`` and the insertion /
    deletion ``curve_protocols``, in table order."""
    return [n for n in METRIC_COLUMNS
            if (not n.startswith("txt_") or n.rsplit("_", 1)[1] in protocols)
            and (not n.endswith("_rise") or "rise" in curve_protocols)]
