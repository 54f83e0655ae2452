"""The completeness schedule's range and its split at the cosine's clamp (nibcore.schedules)."""

import math

import pytest
import torch
from conftest import TINY_CFG

import nibcore
from nibcore import schedules
from nibcore.base import COSINE_EPS, cosine, default_layer, other_features
from nibcore.methods.nib import path_values
from nibcore.schedules import (DEPTHS, KINK_TOLERANCE, completeness, completeness_decades,
                               make_schedule, probe_points)

TEXT = "a red circle and a cat"


def zero_bias_model(seed: int) -> nibcore.ClipModel:
    """A tiny random CLIP whose biases are all zero (LayerNorm, linear and attention biases), as
    Hugging Face initialises CLIP: the network is nearly homogeneous in λ near λ = 0."""
    torch.manual_seed(seed)
    model = nibcore.build_clip(TINY_CFG, name="tiny-zero-bias")
    with torch.no_grad():
        for name, p in model.clip.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


def probe_of(model, picture, side):
    """The NIB probe ``path_at`` for one pair, as NIB builds it, and the tower, state, layer."""
    pixels, ids = model.preprocess(picture)[None], model.trim(model.tokenize([TEXT]))
    tower = model.tower(side)
    layer = default_layer(tower)
    pool = None if side == "image" else ids
    target = other_features(model, pixels, ids, side)
    with torch.no_grad():
        z = tower.lower(pixels if side == "image" else ids, layer)
    calls = []

    def path_at(lam, pairs=None):
        calls.append(len(lam))
        return path_values(tower, z, layer, pool, target, lam, 128, pairs)

    return path_at, calls, (tower, z, layer, pool, target)


def relative_gap(a) -> float:
    return abs(a.completeness_gap) / abs(a.f1 - a.f0)


# --- the range ----------------------------------------------------------------------------------

def test_completeness_decades_rule():
    """The smallest probed depth from which every deeper probe agrees with f(0)."""
    def curve(knee):  # f(λ) = 1 above 10^-knee, f(0) = 0 below; one pair
        return torch.where(probe_points() >= 10.0 ** -knee, 1.0, 0.0).double()[:, None]

    assert completeness_decades(curve(3)) == DEPTHS[0] == 8
    assert completeness_decades(curve(13)) == 14
    assert completeness_decades(curve(99)) == DEPTHS[-1]  # never agrees: the deepest probe


def test_breaks_split_only_their_decade_and_keep_the_rest_bit_for_bit():
    plain_l, plain_w = completeness(5, 8)
    split_l, split_w = completeness(5, 8, breaks=[3e-4, 1e-9, 2.0])  # two outside the range
    assert len(split_l) == len(plain_l) + 5
    assert torch.all(split_l[1:] > split_l[:-1])
    inside = (split_l > 1e-4) & (split_l < 1e-3)
    assert int(inside.sum()) == 10 and int(((plain_l > 1e-4) & (plain_l < 1e-3)).sum()) == 5
    assert torch.equal(split_l[~inside], plain_l[(plain_l <= 1e-4) | (plain_l >= 1e-3)])
    assert torch.equal(split_w[~inside], plain_w[(plain_l <= 1e-4) | (plain_l >= 1e-3)])
    # a piece of [1e-4, 1e-3] ends at the break; both pieces sum to the decade's length
    assert float(split_w[inside].sum()) == pytest.approx(1e-3 - 1e-4, rel=1e-9)
    assert float(split_w[(split_l > 1e-4) & (split_l < 3e-4)].sum()) == pytest.approx(
        3e-4 - 1e-4, rel=1e-9)


# --- the split on a synthetic kink ------------------------------------------------------------

def kinked_path(kink: float):
    """A pair whose feature norm crosses the cosine's clamp at λ = ``kink`` with a curved
    log–log slope (1 + 0.3 cos s, s = ln(λ / kink)), like a network on its way to homogeneity;
    f is the clamped cosine: 1 above the kink, ‖feature‖ / eps below. Returns (path_at, f')."""
    def norm(lam):
        s = torch.log(lam / kink)
        return COSINE_EPS * torch.exp(s + 0.3 * torch.sin(s))

    def f(lam):
        return torch.where(lam > 0, torch.clamp(norm(lam) / COSINE_EPS, max=1.0), 0.0)

    def path_at(lam, pairs=None):
        lam = lam.double()
        values, norms = f(lam), torch.where(lam > 0, norm(lam), 0.0)
        return (values, norms) if pairs is not None else (values[:, None], norms[:, None])

    def derivative(lam):
        s = torch.log(lam / kink)
        return torch.where(lam < kink, f(lam) * (1 + 0.3 * torch.cos(s)) / lam, 0.0)

    return path_at, derivative


@pytest.mark.parametrize("kink", [3.7e-12, 2.2e-5])
def test_the_kink_is_located_and_the_split_makes_the_sum_exact(kink):
    path_at, derivative = kinked_path(kink)
    lambdas, weights = make_schedule("completeness", 10, path_at)
    decades = completeness_decades(path_at(probe_points())[0])
    # exact: f(1) − f(10^-decades), the range's own integral (the rest is below the tolerance)
    exact = 1.0 - float(path_at(torch.tensor([10.0 ** -decades]))[0])
    # the kink is placed to |g| <= KINK_TOLERANCE: the sum is off by about that times f(kink) = 1
    assert float((weights * derivative(lambdas)).sum()) == pytest.approx(exact, abs=KINK_TOLERANCE)
    # the same range without the split: the jump of d f / d ln λ costs orders of magnitude
    plain_l, plain_w = completeness(10, decades)
    assert len(lambdas) == len(plain_l) + 10
    assert abs(float((plain_w * derivative(plain_l)).sum()) - exact) > 100 * KINK_TOLERANCE
    kinks = schedules.locate_kinks(path_at, schedules.kink_brackets(
        path_at(probe_points())[1], decades))
    assert len(kinks) == 1 and kinks[0] == pytest.approx(kink, rel=10 * KINK_TOLERANCE)


# --- real models ----------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
def test_trained_like_model_gets_the_plain_schedule_from_one_probe_call(tiny, picture, side):
    """LayerNorm biases non-zero (conftest's tiny model): no feature norm meets the clamp, so the
    schedule is the plain 8 decades, bit for bit, from the one probe call (no refinement)."""
    path_at, calls, _ = probe_of(tiny, picture, side)
    lambdas, weights = make_schedule("completeness", 10, path_at)
    plain = completeness(10, 8)
    assert torch.equal(lambdas, plain[0]) and torch.equal(weights, plain[1])
    assert calls == [len(probe_points())]


@pytest.mark.parametrize("side", ["image", "text"])
def test_zero_bias_model_kink_is_where_the_feature_norm_meets_the_clamp(picture, side):
    model = zero_bias_model(1)
    path_at, calls, (tower, z, layer, pool, target) = probe_of(model, picture, side)
    _, norms = path_at(probe_points())
    decades = completeness_decades(path_at(probe_points())[0])
    brackets = schedules.kink_brackets(norms, decades)
    assert len(brackets) == 1
    calls.clear()
    (kink,) = schedules.locate_kinks(path_at, brackets)
    assert 1 <= len(calls) <= 3  # the norm is nearly a power of λ there: secant steps are short
    with torch.no_grad():  # recomputed directly, not through the probe
        feature = tower.upper(kink * z, layer, pool)
        assert feature.dtype == torch.float32
        g = math.log(float(torch.linalg.vector_norm(feature.double())) / COSINE_EPS)
        f_kink = float(cosine(feature, target))
    assert abs(g) <= 10 * KINK_TOLERANCE
    assert abs(f_kink) > 1e-2  # the plateau of the cosine reaches down to it


@pytest.mark.parametrize("side", ["image", "text"])
def test_zero_bias_model_gap_closes_only_with_the_split(picture, side, monkeypatch):
    """All biases zero: the gap is ≤ 1e-3 with the split; the same schedule without it (no
    breaks) leaves a gap at least ten times larger and above 1e-2 (measured 0.14 / 0.32)."""
    model = zero_bias_model(1)
    split = nibcore.explain(model, picture, TEXT, side=side, schedule="completeness")
    again = nibcore.explain(model, picture, TEXT, side=side, schedule="completeness")
    assert (split.raw == again.raw).all()  # deterministic, bit for bit
    assert abs(split.f1 - split.f0) > 1e-2
    assert relative_gap(split) <= 1e-3
    monkeypatch.setattr(schedules, "locate_kinks", lambda path_at, brackets: [])
    plain = nibcore.explain(model, picture, TEXT, side=side, schedule="completeness")
    assert plain.extras["nodes"] == split.extras["nodes"] - 10
    assert relative_gap(plain) > max(1e-2, 10 * relative_gap(split))


def test_zero_bias_batch_shares_the_breaks_of_every_pair(picture, monkeypatch):
    """Each pair's kink splits the shared schedule: every pair's gap closes in one batched call,
    and the nodes are the plain range's plus ``num_steps`` per pair (each norm crosses once)."""
    model = zero_bias_model(1)
    pictures = [picture, picture.transpose(0), picture.rotate(90, expand=True)]
    texts = [TEXT, "a blue square", "two cats"]

    def run():
        return nibcore.explain(model, pictures, texts, side="text", schedule="completeness",
                               num_steps=6)

    split = run()
    monkeypatch.setattr(schedules, "locate_kinks", lambda path_at, brackets: [])
    plain = run()
    assert split[0].extras["nodes"] == plain[0].extras["nodes"] + 6 * len(texts)
    for a, b in zip(split, plain):
        assert relative_gap(a) <= 1e-3
        assert relative_gap(b) > 10 * relative_gap(a)
