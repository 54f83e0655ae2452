"""The paper's side of the comparison: its tables as numbers, its method and metric names, and
the labels and orders the book prints them in (one table of labels, one method order).

* :func:`paper_table` — one of the paper's tables (bundled CSV) as numbers, methods renamed to
  nibcore's keys (``"Grad-CAM"`` → ``"gradcam"``, ``"SM"`` → ``"saliency"``, ...), metrics to the
  paper's short names (``img_conf_drop``, ``text_conf_incr``, ``fps``, ...).
* :data:`DISPLAY`, :data:`METRIC_LABELS`, :data:`DATASET_NAMES` — the printed names.
* :data:`PAPER_ORDER` (Table 2's column order), :data:`BOOK_ORDER` (the book's: NIB first),
  :data:`BEYOND_ORDER` (methods beyond the paper's line-up: Grad-ECLIP, LeGrad).

Metric names. The paper's text metric is our ``"paper"`` text protocol: ``text_conf_drop`` ↔
``txt_conf_drop_paper``; the other protocols keep their names (``txt_conf_drop_clean``, ...).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..columns import COLUMNS, GROUND_TRUTH, PAPER_METRICS, labels
from ..methods import PAPER_LINEUP
from ..models import bundled_file

#: nibcore's method keys, in the paper's column order (Table 2), NIB last as printed.
PAPER_ORDER = ("m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig", "nib")


#: The paper's method names (as in the CSVs) -> nibcore's keys.
PAPER_METHODS = {"NIB": "nib", "M2IB": "m2ib", "RISE": "rise", "Grad-CAM": "gradcam",
                 "Chefer": "chefer", "Chefer et al.": "chefer", "SM": "saliency",
                 "MFABA": "mfaba", "FastIG": "fastig"}


#: Display names of nibcore's method keys.
DISPLAY = {"nib": "NIB", "m2ib": "M2IB", "rise": "RISE", "gradcam": "Grad-CAM",
           "chefer": "Chefer et al.", "saliency": "SM", "mfaba": "MFABA", "fastig": "FastIG",
           "gradeclip": "Grad-ECLIP", "legrad": "LeGrad"}


#: The paper's table files (``data/paper_tables/<file>.csv``) by table number.
PAPER_FILES = {1: "table1_properties", 2: "table2_main_results", 3: "table3_num_steps",
               4: "table4_target_layer", 5: "table5_m2ib_beta", 6: "table6_num_steps_expanded",
               7: "table7_target_layer_expanded", 8: "table8_passes"}


#: Labels of the paper's metric names and FPS, from the column registry
#: (:mod:`nibcore.columns`, where every label and direction is written).
METRIC_LABELS = labels([*PAPER_METRICS, "fps"])


def paper_table_path(name: str) -> Path:
    """The CSV of a paper table: ``data/paper_tables/<name>.csv`` of a clone, or the installed
    package data."""
    try:
        return bundled_file(f"paper_tables/{name}.csv")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"the paper's table {name!r} is missing from data/paper_tables/ "
                                f"(and the package data): {err}") from None


def paper_table(table: int | str) -> pd.DataFrame:
    """One of the paper's tables as printed, read from ``data/paper_tables/`` (clone) or the
    installed package data. ``table``: its number (1–8) or file name (``"table3_num_steps"``).

    Numeric columns are numbers; a ``method`` column holds nibcore's keys (the printed name is
    kept in ``paper_method``). Values are the paper's, never ours.
    """
    name = PAPER_FILES[table] if isinstance(table, int) else str(table)
    path = paper_table_path(name)
    frame = pd.read_csv(path, dtype=str)
    for col in frame.columns:
        if col in ("dataset", "metric", "method"):
            continue
        converted = pd.to_numeric(frame[col], errors="coerce")
        if converted.notna().all():
            frame[col] = converted
    if "method" in frame:
        unknown = set(frame["method"]) - set(PAPER_METHODS)
        if name != PAPER_FILES[1] and unknown:
            raise ValueError(f"unknown method name(s) {sorted(unknown)} in {path}")
        frame.insert(list(frame.columns).index("method") + 1, "paper_method", frame["method"])
        frame["method"] = frame["method"].map(lambda m: PAPER_METHODS.get(m, m))
    return frame


#: Short metric names for the columns of :func:`rank_grid`.
SHORT_METRICS = {m: COLUMNS[m].short for m in [*PAPER_METRICS, "fps"]}


#: Display names of the book's datasets.
DATASET_NAMES = {"scenes": "held-out scenes", "cc": "Conceptual Captions", "imagenet": "ImageNet",
                 "flickr8k": "Flickr8k"}


#: nibcore's method keys in the order the book's tables list them (NIB first).
BOOK_ORDER = PAPER_LINEUP

#: Methods beyond the paper's line-up (published after it), in the order the book adds them
#: after :data:`BOOK_ORDER`; not part of the paper's tables. LeGrad has no text side.
BEYOND_ORDER = ("gradeclip", "legrad")


#: The ground-truth metrics of the leaderboard (the evaluation's column names, in column order).
GT_METRICS = {m: m for m in GROUND_TRUTH}
