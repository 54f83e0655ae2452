"""nibcore.book.mechanisms: the controlled measurements of the text side (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nibcore.book import mechanisms as M
from nibcore.store import load


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return M.text_rows({"scenes": load("table2"), "rise": load("table2-rise-text"),
                        "text": load("text-gt")})


def test_length_comparison_on_the_stored_rows(rows):
    frame = M.length_comparison(rows, seed=0)
    methods = set(rows["method"])
    assert len(frame) == 2 * len(methods)
    assert set(frame["dataset"]) == {"scenes", "scenes_text"}
    for col in ("drop", "s0", "s1"):
        assert (frame[f"{col}_low"] <= frame[col]).all()
        assert (frame[col] <= frame[f"{col}_high"]).all()
    for _, g in frame.groupby("dataset"):
        assert sorted(g["rank"]) == list(range(1, len(methods) + 1))
    words = frame.groupby("dataset")["words"].first()
    assert words["scenes"] == 3 and words["scenes_text"] > 3
    # the rows say the same as a direct mean
    nib = rows[(rows["dataset"] == "scenes") & (rows["method"] == "nib")]["drop"].mean()
    got = frame.query("dataset == 'scenes' and method == 'nib'")["drop"].item()
    assert got == pytest.approx(nib)


def test_length_shift_is_paired_on_the_same_scenes(rows):
    shift = M.length_shift(rows, seed=0)
    assert len(shift) == rows["method"].nunique()
    assert (shift["low"] <= shift["diff"]).all() and (shift["diff"] <= shift["high"]).all()
    assert set(shift["change"]) <= {"higher", "lower", "not distinguishable at 95 %"}


def test_pooled_position_is_the_largest_content_id():
    ids = torch.tensor([49406, 320, 736, 2446, 49407, 0, 0])
    assert M.pooled_position(ids, 49407) == (3, 2)


def _synthetic() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = []
    for w in (3, 7):
        for i in range(20):
            v = float(rng.random())
            for probe, drop, pooled in (("uniform", 0.0, 1.0), ("nib", 40 * (1 - v), v),
                                        ("random", 10 + rng.random(), 0.5)):
                out.append(dict(id=f"p{i}", words=w, tokens=w, probe=probe, s0=0.5,
                                s1=0.5 - drop / 100, drop=drop, pooled_value=pooled))
    return pd.DataFrame(out)


def test_summary_contrasts_and_dependence_known_answers():
    probes = _synthetic()
    summary = M.probe_summary(probes)
    uni = summary[summary["probe"] == "uniform"]
    assert (uni["drop"] == 0).all() and (uni["drop_low"] == 0).all()
    assert (uni["drop_high"] == 0).all() and (uni["pooled_is_zero"] == 0).all()
    assert (summary["drop_low"] <= summary["drop"]).all()
    assert (summary["drop"] <= summary["drop_high"]).all()
    assert list(summary["probe"][:3]) == ["uniform", "random", "nib"]
    con = M.probe_contrasts(probes, pairs=(("uniform", "random"),))
    assert (con["verdict"] == "better").all() and (con["n"] == 20).all()
    dep = M.pooled_dependence(probes)
    assert np.allclose(dep["rho"], -1.0) and (dep["n"] == 20).all()


def test_probe_maps_live_uniform_changes_nothing():
    from nibcore import load_model
    from nibcore.datasets import load_dataset

    torch.set_num_threads(1)
    model = load_model("mini")
    probes = M.probe_maps(model, load_dataset("scenes"), n=3, seed=0)
    assert set(probes["probe"]) == set(M.PROBES)
    assert len(probes) == 3 * len(M.PROBES)
    uni = probes[probes["probe"] == "uniform"]
    assert np.allclose(uni["s1"], uni["s0"], atol=1e-6) and (uni["drop"] < 1e-4).all()
    assert (probes[probes["probe"] == "zero_pooled"]["pooled_value"] == 0).all()
    assert (probes["drop"] >= 0).all()
    inv = probes[probes["probe"] == "nib_inverted"]["pooled_value"].to_numpy()
    nib = probes[probes["probe"] == "nib"]["pooled_value"].to_numpy()
    assert np.allclose(inv, 1 - nib)
