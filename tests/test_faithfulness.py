"""The ground truth of use by intervention (nibcore.faithfulness, nibcore.evaluation.use_metrics)
and the cue world's evaluation pairs: definitions on frames with known answers, the live columns
against an independent computation, and the audit of a stored cue-world file."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import nibcore
from nibcore import audit as au
from nibcore import evaluate, explain, store
from nibcore import faithfulness as fa
from nibcore.evaluation import USE_NULL
from nibcore.metrics import mass_density
from nibcore.numerics import FLOAT_NOISE_RTOL
from nibcore.store import Run, Spec
from nibcore.world import cues
from nibcore.world.data import cue_pairs


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


def _frame(effects, nulls, points, densities, methods=("a", "b")):
    """Rows of known ground truth: per pair, ``img_s0`` = 1, ``use_s_r`` = 1 − effect."""
    rows = []
    for i, ((e_cue, e_obj), null) in enumerate(zip(effects, nulls)):
        for m in methods:
            rows.append(dict(id=f"p{i}", method=m, side="image", model="x", img_s0=1.0,
                             use_s_cue=1.0 - e_cue, use_s_object=1.0 - e_obj,
                             **{f"use_null_{j}": v for j, v in enumerate(null)},
                             use_point_cue=points[m][i][0], use_point_object=points[m][i][1],
                             use_density_cue=densities[m][i][0],
                             use_density_object=densities[m][i][1],
                             meta_kind=("agree", "conflict")[i % 2]))
    return pd.DataFrame(rows)


def test_noise_roles_and_leaderboard_on_known_values():
    null = [[0.0, 0.01, 0.0, -0.01]] * 4  # variance 2/3 · 1e-4 per pair: σ = 0.00816
    effects = [(0.5, 0.0), (0.0, -0.5), (0.5, 0.5), (0.001, 0.001)]
    points = {"a": [(100, 0), (0, 100), (50, 50), (0, 0)], "b": [(0, 100), (100, 0), (0, 0),
                                                                (100, 0)]}
    dens = {"a": [(9, 1), (1, 3), (5, 2), (1, 1)], "b": [(1, 2), (2, 1), (1, 1), (4, 1)]}
    df = _frame(effects, null, points, dens)
    sigma = np.sqrt(np.var([0.0, 0.01, 0.0, -0.01], ddof=1))
    assert fa.noise(df) == pytest.approx(sigma)
    gt = fa.ground_truth(df)
    assert list(gt["role_cue"]) == ["supports", "none", "supports", "none"]
    assert list(gt["role_object"]) == ["none", "opposes", "supports", "none"]
    assert gt["threshold"].iloc[0] == pytest.approx(fa.K * sigma)
    board = fa.leaderboard(df).set_index("method")
    # pairs 0 (the cue supports: 100) and 2 (both: 50 + 50); 1 (the object opposes) and 3
    # (nothing beyond the noise) have no supporting region and are left out
    assert board.loc["a", "point_support"] == pytest.approx(100.0)
    assert board.loc["a", "point_support_n"] == 2
    assert board.loc["b", "point_support"] == pytest.approx(0.0)
    assert board.loc["a", "density_cue"] == pytest.approx(7.0)  # pairs 0 and 2: (9 + 5) / 2
    assert board.loc["a", "density_object_n"] == 1
    counts = fa.role_counts(df)
    assert counts.loc["all"].to_numpy().sum() == 4
    assert counts.loc[("conflict", "none"), "opposes"] == 1
    assert counts.loc[("all", "supports"), "supports"] == 1
    verdict = fa.paired_point_verdicts(df, "a").set_index("baseline")
    assert verdict.loc["b", "diff"] == pytest.approx(100.0) and verdict.loc["b", "n"] == 2


def test_rank_agreement_follows_the_effects():
    rng = np.random.default_rng(0)
    n = 40
    e = rng.normal(0, 0.3, size=(n, 2))
    gap = e[:, 0] - e[:, 1]
    dens = {"good": [(1 + g, 1 - g) for g in gap], "bad": [(1 - g, 1 + g) for g in gap]}
    points = {m: [(0, 0)] * n for m in dens}
    df = _frame([tuple(x) for x in e], [[0, 1e-3, 0, -1e-3]] * n, points, dens,
                methods=("good", "bad"))
    board = fa.leaderboard(df).set_index("method")
    assert board.loc["good", "rho"] == pytest.approx(1.0)
    assert board.loc["bad", "rho"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="missing"):
        fa.noise(df.drop(columns=["use_null_0"]))
    with pytest.raises(ValueError, match="one model"):
        fa.ground_truth(pd.concat([df, df.assign(model="y", id=df["id"] + "y")]))


def test_mass_density_is_mass_per_area():
    mask = np.zeros((8, 8), bool)
    mask[:2, :2] = True
    assert mass_density(np.ones((8, 8)), mask) == pytest.approx(1.0)  # uniform: chance
    peak = np.zeros((8, 8))
    peak[:2, :2] = 1.0
    assert mass_density(peak, mask) == pytest.approx(16.0)  # all the mass in 1/16 of the area
    assert mass_density(np.zeros((8, 8)), mask) == pytest.approx(1.0)  # degenerate: chance
    with pytest.raises(ValueError, match="non-empty region"):
        mass_density(peak, np.zeros((8, 8), bool))


def test_cue_pairs_and_null_images():
    ds = cue_pairs(6)
    a, b = ds[2], ds[3]
    assert (a.meta["kind"], b.meta["kind"]) == ("agree", "conflict") and a.text == b.text
    assert np.array_equal(a.meta["regions"]["object"], b.meta["regions"]["object"])
    scene = cues.test_scene(1, "conflict")
    assert b.id == f"cue-{scene.seed}-conflict"
    for r in ("cue", "object", "both"):
        assert np.array_equal(np.array(b.meta["removed"][r]), np.array(cues.remove(scene, r)))
    assert len(b.meta["null"]) == USE_NULL
    img, null = np.array(scene.image), np.array(b.meta["null"][0])
    kept = scene.object_mask | scene.cue_mask
    assert np.array_equal(img[kept], null[kept]) and not np.array_equal(img[~kept], null[~kept])
    assert np.array_equal(null, np.array(cues.null_image(scene, 0)))  # seeded
    assert not np.array_equal(null, np.array(cues.null_image(scene, 1)))
    with pytest.raises(ValueError, match="outside"):
        cue_pairs(0)


def test_live_columns_match_an_independent_computation(mini):
    torch.set_num_threads(1)
    ds = cue_pairs(4)
    df = evaluate(mini, ds, ["nib"], sides=["image"], n=4, progress=False, text_protocols=())
    for _, row in df.iterrows():
        pair = ds[int(row["index"])]
        scene_images = [pair.meta["removed"][r] for r in ("cue", "object", "both")]
        direct = cues.similarity(mini, scene_images + list(pair.meta["null"]),
                                 [pair.text] * (3 + USE_NULL))
        stored = [row[f"use_s_{r}"] for r in ("cue", "object", "both")] + [
            row[f"use_null_{j}"] for j in range(USE_NULL)]
        np.testing.assert_allclose(stored, direct, rtol=FLOAT_NOISE_RTOL, atol=1e-6)
        att = explain(mini, pair.image, pair.text, method="nib")
        for r, mask in pair.meta["regions"].items():
            assert row[f"use_density_{r}"] == pytest.approx(mass_density(att.scores, mask),
                                                            rel=FLOAT_NOISE_RTOL)
    gt = fa.ground_truth(df)
    assert gt["role_cue"].isin(fa.ROLES).all() and gt["role_object"].isin(fa.ROLES).all()


def test_a_stored_cue_file_audits_and_a_changed_value_fails(mini, tmp_path):
    store.SPECS["unit-cues"] = Spec("cues", 2, (Run(("nib", "gradcam"), ("image",)),),
                                    text_protocols=(), about="test")
    try:
        path = store.generate("unit-cues", mini, root=tmp_path, progress=False)
    finally:
        del store.SPECS["unit-cues"]
    tol = au.Tolerances(rtol={}, raw_rtol=1e-5, map_atol=1e-5, factor=10.0,
                        default_rtol=au.MAX_RTOL)
    quiet = dict(log=lambda *_: None)
    report = au.audit(path, mini, pairs=2, tolerances=tol, **quiet)
    assert report.ok and report.checked == 4, [str(m) for m in report.mismatches]
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["use_s_cue"] *= 1.01
    row["use_density_object"] *= 1.05
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    bad = au.audit(path, mini, pairs=2, tolerances=tol, **quiet)
    assert {m.column for m in bad.mismatches} == {"use_s_cue", "use_density_object"}
