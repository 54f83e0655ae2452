"""nibcore.book.mechanisms: the controlled measurements of the text side (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nibcore.book import mechanisms as M
from nibcore.numerics import FLOAT_NOISE_RTOL
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


# --- insertion / deletion under the two protocols --------------------------------------------

def test_curve_ranks_rank_by_direction_within_each_split():
    """Insertion: higher is rank 1; deletion: lower is rank 1; the split by objects ranks each
    group on its own rows."""
    rows = []
    for i, (n_obj, ins, dele) in enumerate([(1, (10, 20), (5, 1)), (2, (30, 5), (9, 3)),
                                            (3, (31, 6), (8, 2))]):
        for m, a, b in (("a", ins[0], dele[0]), ("b", ins[1], dele[1])):
            rows.append(dict(side="image", id=i, method=m, meta_n_objects=n_obj,
                             img_insertion=a, img_deletion=b, img_insertion_rise=-a,
                             img_deletion_rise=-b))
    r = M.curve_ranks(pd.DataFrame(rows), ["a", "b"]).set_index(
        ["scenes", "protocol", "curve", "method"])
    assert r.loc[("one object", "ours", "insertion", "b"), "rank"] == 1
    assert r.loc[("two or three objects", "ours", "insertion", "a"), "rank"] == 1
    assert r.loc[("two or three objects", "ours", "deletion", "b"), "rank"] == 1
    assert r.loc[("two or three objects", "ours", "insertion", "a"), "value"] == 30.5
    assert r.loc[("two or three objects", "rise", "insertion", "b"), "rank"] == 1
    assert r.loc[("all", "ours", "insertion", "a"), "n"] == 3


@pytest.fixture(scope="module")
def mini():
    import nibcore
    return nibcore.load_model("mini")


def test_raster_ties_row_major_is_the_explicit_order_and_no_ties_agree(mini):
    """The row-major entry equals the curves of a map with every tie broken by position, built
    independently (rank by value, then row-major index); a map without ties gets one value
    three times."""
    from nibcore.metrics import insertion_deletion
    from nibcore.world import scenes
    from nibcore.inputs import prepare_images

    scene = scenes.heldout(1, n_objects=1, start=0)[0]
    pixels, ids = prepare_images(mini, [scene.image]), mini.tokenize([scene.caption])
    h, w = mini.image_size
    tied = np.zeros((h, w))
    tied[: h // 2] = 1.0  # two groups of ties
    tied[5:9, 7:20] = 0.5
    out = M.raster_ties(mini, pixels, ids, tied).set_index("order")
    key = np.lexsort((np.arange(h * w), -tied.ravel()))  # value descending, then row-major
    strict = np.empty(h * w)
    strict[key] = np.arange(h * w, 0, -1)
    ref = insertion_deletion(mini, pixels, ids, strict.reshape(h, w)[None])
    first = out.loc["row-major (version 1)"]  # batched differently: float noise apart
    assert first["insertion"] == pytest.approx(ref["insertion"][0], rel=FLOAT_NOISE_RTOL)
    assert first["deletion"] == pytest.approx(ref["deletion"][0], rel=FLOAT_NOISE_RTOL)
    assert first["tied"] == h * w
    distinct = np.random.default_rng(0).random((h, w))
    free = M.raster_ties(mini, pixels, ids, distinct)
    assert free["tied"].iloc[0] == 0
    for col in ("insertion", "deletion"):
        assert np.ptp(free[col]) <= FLOAT_NOISE_RTOL * free[col].abs().max()


def test_rise_target_match_is_the_argmax_over_the_class_prompts(mini):
    """The match equals a direct computation: the class prompt with the largest cosine with
    the image is the caption."""
    import torch.nn.functional as F

    from nibcore.datasets import load_dataset
    from nibcore.evaluation import seeded_subset
    from nibcore.inputs import prepare_images

    ds = load_dataset("scenes")
    out = M.rise_target_match(mini, ds, n=24, seed=1, rows_per_call=5).set_index("scenes")
    prompts = ds.info["class_prompts"]
    with torch.no_grad():
        text = F.normalize(mini.encode_text(mini.tokenize(prompts)), dim=-1)
        pairs = [ds[i] for i in seeded_subset(len(ds), 24, 1)]
        img = F.normalize(mini.encode_image(prepare_images(mini, [p.image for p in pairs])),
                          dim=-1)
    hits = [prompts[int(k)] == p.text for k, p in zip((img @ text.T).argmax(-1), pairs)]
    assert out.loc["all", "n"] == 24
    assert out.loc["all", "match"] == pytest.approx(100 * np.mean(hits))
    assert out.drop("all")["n"].sum() == 24
    assert (out["low"] <= out["match"]).all() and (out["match"] <= out["high"]).all()


def test_protocol_sentences_follow_the_ranks_and_the_match():
    ranks = pd.DataFrame([dict(scenes=k, protocol=p, curve=c, method=m, rank=r)
                          for k in ("one object", "two or three objects")
                          for p in ("ours", "rise") for c in ("insertion", "deletion")
                          for m, r in (("nib", 1 if p == "ours" or k == "one object" else 2),
                                       ("x", 2 if p == "ours" or k == "one object" else 1))])
    match = pd.DataFrame([dict(scenes="one object", n=10, match=100.0, low=72.2, high=100.0),
                          dict(scenes="two or three objects", n=20, match=40.0, low=21.9,
                               high=61.3)])
    one, many = M.protocol_sentences(ranks, match, display={"nib": "NIB"})
    assert one.startswith("**One object**") and "insertion 1 → 1; deletion 1 → 1" in one
    assert "insertion 1 → 2; deletion 1 → 2" in many and "of 20 pairs" in many
    assert "NIB's rank of 2" in many


def test_map_profile_on_the_cue_world():
    """Where maps peak and how flat they are, live: the ceiling bounds every region's density,
    and the distances are those of the maximum."""
    import nibcore
    from nibcore.book.mechanisms import map_profile
    from nibcore.datasets import load_dataset

    model = nibcore.load_model("cue")
    prof = map_profile(model, load_dataset("cues"), ["nib", "gradcam"], n=3).set_index("method")
    assert list(prof.index) == ["nib", "gradcam"] and (prof["n"] == 3).all()
    assert (prof["ceiling"] >= 1).all() and (prof["mean"] <= 1).all()
    assert ((prof["edge"] >= 0) & (prof["edge"] <= 31.5)).all()
    assert (prof["to_object"] >= 0).all()
