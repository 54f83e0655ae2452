"""Intervals, paired verdicts and the findings box of the results chapters
(nibcore.book.reports, uncertainty section)."""

import numpy as np
import pandas as pd
import pytest

from nibcore.book import reports
from nibcore.stats import SAME


def _rows(n=200, seed=0):
    """Synthetic evaluation rows: NIB clearly lower image drop than gradcam, same as chefer."""
    rng = np.random.default_rng(seed)
    rows = []
    base = rng.normal(10, 3, size=n)
    for m, shift in (("nib", 0.0), ("gradcam", 2.0), ("chefer", 0.0)):
        noise = rng.normal(0, 0.3, size=n)
        for i in range(n):
            rows.append(dict(id=f"p{i}", method=m, side="image", params="{}",
                             img_conf_drop=base[i] + shift + noise[i],
                             img_conf_incr=100.0 * (rng.random() < 0.3),
                             degenerate=int(m == "gradcam" and i < 3)))
            rows.append(dict(id=f"p{i}", method=m, side="text", params="{}",
                             txt_conf_drop_paper=rng.random(), degenerate=0))
    return pd.DataFrame(rows)


def test_cell_intervals_and_table():
    df = _rows()
    cells = reports.cell_intervals(df, ["img_conf_drop", "img_conf_incr", "txt_conf_drop_paper"])
    nib = cells[(cells.method == "nib") & (cells.metric == "img_conf_drop")].iloc[0]
    assert nib.n == 200 and nib.low < nib.value < nib.high and nib.how == "bootstrap"
    incr = cells[(cells.method == "nib") & (cells.metric == "img_conf_incr")].iloc[0]
    assert incr.how == "wilson"
    assert cells[(cells.method == "gradcam") & (cells.side == "image")].degenerate.iloc[0] == 3
    table = reports.interval_table(cells)
    assert list(table.columns) == ["NIB", "Grad-CAM", "Chefer et al."]
    assert table.loc["degenerate maps (image)", "Grad-CAM"] == "3"
    assert table.loc["n (text)", "NIB"] == "200"
    assert "[" in table.loc["Image Conf. Drop ↓", "NIB"]


def test_paired_verdicts_and_sentences():
    df = _rows()
    v = reports.paired_verdicts(df, ["img_conf_drop"])
    got = dict(zip(v.baseline, v.verdict))
    assert got == {"gradcam": "better", "chefer": SAME}
    s = reports.verdict_sentences(v)
    assert len(s) == 1 and "better than Grad-CAM" in s[0] and "not distinguishable" in s[0]
    t = reports.verdict_table(v)
    assert t.loc["Image Conf. Drop ↓", "Grad-CAM"].startswith("better: -1.9")
    # fewer pairs for one baseline: the comparison uses the pairs both have
    short = df[~((df.method == "gradcam") & (df.id.isin([f"p{i}" for i in range(150)])))]
    v2 = reports.paired_verdicts(short, ["img_conf_drop"])
    assert v2.set_index("baseline").loc["gradcam", "n"] == 50


def test_findings_box_counts_verdicts():
    df = _rows()
    cells = reports.cell_intervals(df, ["img_conf_drop"])
    v = reports.paired_verdicts(df, ["img_conf_drop"])
    box = reports.findings_box(v, cells)
    assert "better than 1, worse than 0, not distinguishable from 1 of 2" in box
    assert "Smoke run" in reports.findings_box(v, cells, smoke=True)
    assert "Smoke run" not in box


def test_agreement_ci_and_beside_ci():
    df = _rows()
    paper = pd.DataFrame(dict(source="paper (X)", method=["nib", "gradcam", "chefer"],
                              metric="img_conf_drop", value=[1.0, 3.0, 2.0]))
    a = reports.agreement_ci(df, paper)
    row = a.iloc[0]
    assert row.methods == 3 and -1 <= row.low <= row.high <= 1
    cells = reports.cell_intervals(df, ["img_conf_drop"])
    ours = reports.cells_long(cells, "ours (test)")
    assert set(ours.metric) == {"img_conf_drop"}
    assert (ours["sem"] > 0).all()
    wide = reports.beside_ci(paper, ours)
    assert wide.shape[0] == 2 and "[" in wide.loc[("Image Conf. Drop ↓", "ours (test)"), "NIB"]


def test_timing_speed_and_smoke_label():
    t = pd.DataFrame(dict(method=["nib", "nib"], side=["image", "text"], pairs=2, repeats=3,
                          seconds=[0.5, 0.25], fps=[2.0, 4.0], hardware="cpu", threads=1))
    sp = reports.timing_speed(t)
    assert sp.loc["nib", "fps_both"] == pytest.approx(1 / (0.5 + 0.25))
    assert reports.smoke_label("ours (x)", True) == "ours (x) — SMOKE RUN, numbers mean nothing"
    assert reports.smoke_label("ours", False) == "ours"


def test_sweep_ci():
    rng = np.random.default_rng(0)
    df = pd.DataFrame([dict(id=f"p{i}", side="image", num_steps=k,
                            img_conf_drop=rng.normal(k, 1)) for k in (5, 10) for i in range(50)])
    long = reports.sweep_ci(df, "num_steps", "ours")
    assert set(long.num_steps) == {5, 10} and (long.n == 50).all()
    assert (long.low < long.value).all() and (long.value < long.high).all()
    paper = pd.DataFrame(dict(source="paper (X)", num_steps=[5, 10], metric="img_conf_drop",
                              value=[1.0, 2.0]))
    wide = reports.beside_ci(paper, long, columns="num_steps")
    assert list(wide.columns) == [5, 10] and "[" in wide.iloc[1, 0]
