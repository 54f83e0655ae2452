"""Batched evaluation agrees with one pair per call, and ``share_sides`` changes nothing but cost.

Measured on the bundled model (8 scene pairs, 8 methods, batch 8 vs batch 1, 0-100 scale): NIB's
continuous metrics differ by at most 2e-5 and its pointing game not at all; Saliency, Grad-CAM,
FastIG, MFABA and Grad-ECLIP by at most 5e-3 on insertion/deletion (curves of 0-100 scores),
where a float32 matrix product of another batch shape rounds a map's value differently and
reorders nearly tied pixels; the pointing game flips where two pixels tie for the maximum
(Saliency, Chefer). M2IB differs outright: its noise is drawn per call, so a batch of 8 draws
other noise than 8 calls of one. The metrics themselves, on the same maps, agree to float32
rounding of the cosines: within the float noise between numeric paths (a batch of another shape;
``FLOAT_NOISE_RTOL`` of a cosine: 1e-5 on the cosines, 1e-3 on the 0-100 scale).
"""

import numpy as np
import pandas as pd
import pytest

import nibcore
from nibcore import evaluation as ev
from nibcore.datasets import load_dataset
from nibcore.numerics import FLOAT_NOISE_RTOL
from nibcore.inputs import prepare_images
from nibcore.metrics import TEXT_PROTOCOLS, image_confidence, insertion_deletion, text_confidence

NIB = {"nib": {"num_steps": 3}}
COST = ["seconds", "batch", "fwd", "bwd", "fwd_rows", "bwd_rows"]


@pytest.fixture(scope="module")
def batch(tiny):
    ds = load_dataset("scenes_text")
    pairs = [ds[i] for i in range(5)]
    pixels = prepare_images(tiny, [p.image for p in pairs])
    ids = tiny.tokenize([p.text for p in pairs])
    return pairs, pixels, ids


def test_metrics_on_the_same_maps_agree_batched_and_one_by_one(tiny, batch):
    pairs, pixels, ids = batch
    rng = np.random.default_rng(0)
    maps = rng.random((len(pairs), *tiny.image_size)).astype(np.float32)
    texts = [rng.random(int(n)).astype(np.float32) for n in tiny.text_length(ids)]
    together = {**image_confidence(tiny, pixels, ids, maps),
                **insertion_deletion(tiny, pixels, ids, maps)}
    for p in TEXT_PROTOCOLS:
        together.update({f"{k}_{p}": v for k, v in
                         text_confidence(tiny, pixels, ids, texts, p).items()})
    for b in range(len(pairs)):
        one = {**image_confidence(tiny, pixels[b:b + 1], ids[b:b + 1], maps[b:b + 1]),
               **insertion_deletion(tiny, pixels[b:b + 1], ids[b:b + 1], maps[b:b + 1])}
        for p in TEXT_PROTOCOLS:
            one.update({f"{k}_{p}": v for k, v in text_confidence(
                tiny, pixels[b:b + 1], ids[b:b + 1], texts[b:b + 1], p).items()})
        assert set(one) == set(together)
        for k, v in one.items():
            scale = 1 if k.startswith(("s0", "s1")) else 100  # cosines, else 0-100
            np.testing.assert_allclose(v[0], together[k][b], rtol=0,
                                       atol=scale * FLOAT_NOISE_RTOL, err_msg=k)


def test_runner_batched_equals_one_by_one_for_nib(tiny):
    a = ev.evaluate(tiny, "scenes_text", "nib", n=5, params=NIB, progress=False, batch_size=1,
                    warmup=False)
    b = ev.evaluate(tiny, "scenes_text", "nib", n=5, params=NIB, progress=False, batch_size=5,
                    warmup=False)
    assert set(a["batch"]) == {1} and set(b["batch"]) == {5}
    metrics = [c for c in a.columns if c not in COST and a[c].dtype.kind == "f"]
    assert "img_insertion" in metrics and "txt_conf_drop_paper" in metrics
    curves = ["img_insertion", "img_deletion"]
    rest = [c for c in metrics if c not in curves]
    pd.testing.assert_frame_equal(a[rest], b[rest], check_exact=False, rtol=0, atol=1e-4)
    # a curve orders the map's pixels: a batch of another shape rounds the map differently
    # (below), which can swap nearly tied pixels across a step of the curve; on this 32 x 32
    # model one pixel is 1/1024 of the image: measured 1.4e-2 of 100 here, 4e-6 on mini
    pd.testing.assert_frame_equal(a[curves], b[curves], check_exact=False, rtol=0, atol=5e-2)
    assert (a["pointing"].dropna() == b["pointing"].dropna()).all()


def test_nib_maps_batched_and_one_by_one_differ_by_rounding_only(tiny, batch):
    pairs, pixels, _ = batch
    texts = [p.text for p in pairs]
    for side in ("image", "text"):
        together = nibcore.explain(tiny, pixels, texts, side=side, num_steps=3)
        for b, t in enumerate(texts):
            one = nibcore.explain(tiny, pixels[b], t, side=side, num_steps=3)
            scale = np.abs(one.raw).max()
            np.testing.assert_allclose(together[b].raw, one.raw, rtol=0, atol=1e-5 * scale)


def test_share_sides_changes_only_the_cost_columns(tiny, tmp_path):
    kw = dict(n=3, params=NIB, progress=False, batch_size=2)
    apart = ev.evaluate(tiny, "scenes_text", ["nib", "saliency"], **kw)
    shared = ev.evaluate(tiny, "scenes_text", ["nib", "saliency"], share_sides=True,
                         out=tmp_path / "s.jsonl", **kw)
    assert "sides" not in apart
    assert (shared.loc[shared.method == "nib", "sides"] == 2).all()
    assert shared.loc[shared.method == "saliency", "sides"].isna().all()  # no sharing there
    # the same metrics; within float noise (FLOAT_NOISE_RTOL, on values up to 100) where NIB's
    # text side takes its target from the image path's row at λ = 1 (another batch shape)
    pd.testing.assert_frame_equal(apart.drop(columns=COST),
                                  shared.drop(columns=COST + ["sides"]), check_exact=False,
                                  rtol=FLOAT_NOISE_RTOL, atol=100 * FLOAT_NOISE_RTOL)
    nib = shared[shared.method == "nib"]
    # per pair the two sides split one call's time and report that call's passes
    for _, two in nib.groupby("id"):
        assert two["seconds"].nunique() == 1 and two["fwd"].nunique() == 1
    again = ev.evaluate(tiny, "scenes_text", ["nib", "saliency"], share_sides=True,
                        out=tmp_path / "s.jsonl", **kw)
    pd.testing.assert_frame_equal(shared, again)  # resumed from the file, nothing recomputed
    assert len(ev.load_results(tmp_path / "s.jsonl")) == len(shared)
