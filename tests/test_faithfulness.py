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


def test_kind_densities_split_by_scene_kind():
    """Per method, kind and region: the mean density over the pairs of that kind, whatever
    the region's role."""
    null = [[0.0, 0.01, 0.0, -0.01]] * 4
    effects = [(0.5, 0.0), (-0.5, 0.5), (0.5, 0.5), (-0.5, 0.5)]  # kinds: agree, conflict, ...
    points = {"a": [(0, 0)] * 4}
    dens = {"a": [(9, 1), (3, 2), (5, 3), (1, 4)]}
    d = fa.kind_densities(_frame(effects, null, points, dens, methods=("a",)))
    got = d.set_index(["kind", "region"])["density"]
    assert got[("agree", "cue")] == pytest.approx(7.0)       # pairs 0 and 2
    assert got[("conflict", "cue")] == pytest.approx(2.0)    # pairs 1 and 3
    assert got[("conflict", "object")] == pytest.approx(3.0)
    assert set(d["n"]) == {2}
    assert (d["low"] <= d["density"]).all() and (d["density"] <= d["high"]).all()


@pytest.mark.parametrize("seed", range(5))
def test_no_region_exceeds_the_density_ceiling(seed):
    """A region's density is its mean over the map's mean, so the map's max over its mean
    bounds it; the bound is reached by the region of the maximal pixel alone."""
    rng = np.random.default_rng(seed)
    scores = rng.random((16, 16)) ** 3
    ceiling = fa.density_ceiling(scores)
    for _ in range(20):
        mask = rng.random((16, 16)) < rng.uniform(0.01, 0.5)
        if mask.any():
            assert mass_density(scores, mask) <= ceiling * (1 + 1e-12)
    top = np.zeros((16, 16), bool)
    top[np.unravel_index(np.argmax(scores), scores.shape)] = True
    assert mass_density(scores, top) == pytest.approx(ceiling)
    assert fa.density_ceiling(np.ones((4, 4))) == pytest.approx(1.0)  # flat: nothing stands out
    assert np.isnan(fa.density_ceiling(np.zeros((4, 4))))
    assert np.isnan(fa.density_ceiling(np.full((4, 4), np.nan)))


def _densities(cue_conflict, control=(1.0, 0.8, 1.2)):
    rows = []
    for model, (agree, conflict) in (("cue", ((5.0, 4.0, 6.0), cue_conflict)),
                                     ("cue-control", (control, control))):
        for kind, (v, lo, hi) in (("agree", agree), ("conflict", conflict)):
            for region in fa.REGIONS:
                rows.append(dict(model=model, method="nib", kind=kind, region=region, n=50,
                                 density=v, low=lo, high=hi))
    d = pd.DataFrame(rows)
    return {m: g.drop(columns="model") for m, g in d.groupby("model")}


def test_use_mechanism_sentences_follow_the_measured_values():
    from nibcore.book.reports import use_mechanism_sentences

    ceilings = pd.DataFrame([dict(method="nib", ceiling=2.5, n=12, edge=3.0, to_object=19.0),
                             dict(method="gradcam", ceiling=50.0, n=12, edge=9.0, to_object=4.0),
                             dict(method="m2ib", ceiling=10.0, n=12, edge=7.0, to_object=5.0)])
    unsigned = use_mechanism_sentences(_densities((3.0, 2.0, 4.0)), ceilings)
    assert "not signed" in unsigned[0] and "chance, as a faithful map must" in unsigned[2]
    assert unsigned[1] == ("Of the 1 methods on the cue model's conflicting scenes, 0 turn away "
                           "from the opposing cue (interval below 1); 1 light it up (interval "
                           "above 1): NIB; 0 are not distinguishable from chance there.")
    assert "3rd of 3" in unsigned[3] and "flatter than most" in unsigned[3]
    assert "3 px from the image's edge and 19 px from the object" in unsigned[4]
    assert unsigned[4].index("Grad-CAM 4") < unsigned[4].index("M2IB 5")
    turned = use_mechanism_sentences(_densities((0.5, 0.3, 0.7), control=(2.0, 1.5, 2.5)),
                                     ceilings.assign(ceiling=[80.0, 50.0, 10.0]))
    assert "turns away from the cue" in turned[0] and "1 turn away" in turned[1]
    assert "although the control does not use the cue" in turned[2]
    assert "1st of 3" in turned[3] and "no flatter than most" in turned[3]
    unclear = use_mechanism_sentences(_densities((1.1, 0.9, 1.3), control=(1.0, np.nan, np.nan)),
                                      ceilings)
    assert "not distinguishable from chance" in unclear[0]
    assert "1 are not distinguishable from chance there: NIB" in unclear[1]
    assert "too few pairs" in unclear[2]
