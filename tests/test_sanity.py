"""nibcore.sanity: model-parameter randomisation and rank correlation of maps."""

import numpy as np
import pytest
import torch
from PIL import Image

from nibcore import sanity
from nibcore.datasets import Pair


def _params(model, side):
    return [p.detach().clone() for p in model.tower(side).blocks.parameters()]


def test_randomise_blocks_changes_only_the_top_blocks(tiny):
    before = [b.state_dict() for b in tiny.image.blocks]
    before = [{k: v.clone() for k, v in sd.items()} for sd in before]
    twin = sanity.randomise_blocks(tiny, "image", top=1, seed=0)
    for sd, block in zip(before, tiny.image.blocks):  # the original is untouched
        for k, v in block.state_dict().items():
            assert torch.equal(v, sd[k])
    for i, block in enumerate(twin.image.blocks):
        same = all(torch.equal(v, before[i][k]) for k, v in block.state_dict().items())
        assert same == (i < tiny.image.n_blocks - 1)
    for a, b in zip(twin.text.blocks.parameters(), tiny.text.blocks.parameters()):
        assert torch.equal(a, b)
    assert twin.name != tiny.name


def test_randomise_blocks_seeded_and_scaled(tiny):
    a = sanity.randomise_blocks(tiny, "text", top=2, seed=5)
    b = sanity.randomise_blocks(tiny, "text", top=2, seed=5)
    c = sanity.randomise_blocks(tiny, "text", top=2, seed=6)
    pa, pb, pc = _params(a, "text"), _params(b, "text"), _params(c, "text")
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))
    orig = list(tiny.text.blocks[-1].parameters())
    new = list(a.text.blocks[-1].parameters())
    for o, n in zip(orig, new):
        if o.numel() > 100:
            assert n.std().item() == pytest.approx(o.std().item(), rel=0.2)


def test_randomise_blocks_validates(tiny):
    with pytest.raises(ValueError, match="top"):
        sanity.randomise_blocks(tiny, "image", top=tiny.image.n_blocks + 1)
    assert sanity.randomise_blocks(tiny, "image", top=0).image.n_blocks == tiny.image.n_blocks


def test_rank_correlation():
    a = np.arange(16.0).reshape(4, 4)
    assert sanity.rank_correlation(a, a) == pytest.approx(1.0)
    assert sanity.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert sanity.rank_correlation(a, a ** 3) == pytest.approx(1.0)  # ranks only
    assert np.isnan(sanity.rank_correlation(a, np.zeros_like(a)))
    ties = np.array([0.0, 0.0, 1.0, 2.0])
    # average ranks: [0.5, 0.5, 2, 3] against [0, 1, 2, 3]
    r = np.array([0.5, 0.5, 2, 3]) - 1.5
    expected = (r * (np.arange(4) - 1.5)).sum() / np.sqrt((r ** 2).sum() * 5)
    assert sanity.rank_correlation(ties, np.arange(4.0)) == pytest.approx(expected)
    with pytest.raises(ValueError):
        sanity.rank_correlation(a, a[:2])


def test_randomisation_test(tiny):
    rng = np.random.RandomState(0)
    pairs = [Pair(Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8")), t, f"p{i}")
             for i, t in enumerate(["a red circle", "a blue ring"])]
    df = sanity.randomisation_test(tiny, pairs, ["nib", "gradcam"], side="image", tops=[1, 4])
    assert set(df["kind"]) == {"randomised", "other pair"}
    assert len(df[df.kind == "randomised"]) == 2 * 2 * 2
    vals = df["spearman"].dropna()
    assert ((vals >= -1 - 1e-9) & (vals <= 1 + 1e-9)).all()
    summary = sanity.randomisation_summary(df)
    assert list(summary.columns) == ["top 1 random", "top 4 random", "other pair (reference)"]
    text = sanity.randomisation_test(tiny, pairs, ["nib"], side="text", tops=[2])
    assert len(text) == 4


def test_randomisation_report_covers_both_towers(tiny, picture):
    from types import SimpleNamespace

    pairs = [SimpleNamespace(image=picture, text="a red circle", id="a"),
             SimpleNamespace(image=picture.rotate(90), text="a blue square", id="b")]
    rows, summary = sanity.randomisation_report(tiny, pairs, ["gradcam"], seed=0)
    assert set(rows.side) == {"image", "text"}
    assert sorted(set(rows[rows.side == "image"].top)) == [0, 1, 2, 4]  # reference, 1, L//2, L
    assert list(summary) == ["image", "text"]
    assert "other pair (reference)" in summary["image"].columns
