"""The column registry is the one place a metric's label and direction are written."""

import re
from pathlib import Path

import pytest

from nibcore import columns
from nibcore.book import paper, reports
from nibcore.metrics import TEXT_PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]


def test_every_frame_column_is_registered_with_a_side_and_direction():
    for name in columns.metric_columns(TEXT_PROTOCOLS):
        c = columns.column(name)
        assert c.side in ("image", "text") and c.label.startswith(c.title)
    assert columns.lower_is_better("img_conf_drop") and columns.lower_is_better("img_deletion")
    assert columns.lower_is_better("txt_conf_drop_m2ib") and columns.lower_is_better("passes")
    assert not columns.lower_is_better("img_insertion") and not columns.lower_is_better("fps")
    assert columns.column("mask_area").better is None and columns.label("mask_area") == \
        "Mask area (chance)"
    with pytest.raises(KeyError, match="unknown metric column 'nope'"):
        columns.lower_is_better("nope")


def test_paper_names_read_our_columns_and_labels_come_from_the_registry():
    assert paper.PAPER_METRICS["text_conf_drop"] == "txt_conf_drop_paper"
    assert columns.column("text_conf_drop").cosines == columns.column(
        "txt_conf_drop_paper").cosines
    assert paper.METRIC_LABELS["text_conf_incr"] == "Text Conf. Increase ↑"
    assert reports.MAIN_METRICS["txt_conf_drop_paper"] == "Text Conf. Drop ↓ (paper)"
    assert reports.GT_LABELS["energy"] == reports.MAIN_METRICS["energy"]


def test_only_the_registry_writes_labels_and_directions():
    """No other shipped module types a metric label (a registered title followed by its arrow)
    or decides a direction from a column's name."""
    labels = sorted({c.title + arrow for c in columns.COLUMNS.values() for arrow in (" ↓", " ↑")})
    direction = re.compile(r"""["'](drop|deletion)["'] (not )?in """)
    offenders = []
    for path in sorted((ROOT / "nibcore").rglob("*.py")):
        if path.name == "columns.py":
            continue
        # docstrings and comments may quote a label as an example
        code = re.sub(r'"""(.|\n)*?"""', "", path.read_text())
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
        offenders += [f"{path.name}: {label!r}" for label in labels if f'"{label}' in code]
        offenders += [f"{path.name}: {m.group(0)!r}" for m in direction.finditer(code)]
    assert not offenders, offenders
