"""NaN and ±inf maps are scored by the documented degenerate rules (nibcore.metrics, "Degenerate
maps") by every metric itself: pointing game a miss, energy and energy_pos the chance level,
insertion/deletion the seeded order (both protocols), Confidence Drop/Increase and the text
protocols with the non-finite values counting as 0, text ground truth a miss with margin 0."""

import math

import numpy as np
import pytest
import torch

from nibcore.metrics import (TEXT_PROTOCOLS, class_text_features, degenerate_map,
                             degenerate_text, energy_in_mask, finite_map, image_confidence,
                             insertion_deletion, no_positive_mass, perturb_image, changed_share,
                             pointing_game, raw_pixel_map, text_confidence, text_ground_truth)

BAD = [np.nan, np.inf, -np.inf]


def _mask() -> np.ndarray:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    return mask


def _peaked(bad: float) -> np.ndarray:
    """A map whose only peak is in the mask, with one non-finite value outside it."""
    m = np.zeros((8, 8))
    m[3, 3] = 1.0
    m[7, 7] = bad
    return m


@pytest.mark.parametrize("bad", BAD)
def test_pointing_game_is_a_miss(bad):
    assert pointing_game(_peaked(0.0), _mask()) == 1.0  # the same map, finite, is a hit
    assert degenerate_map(_peaked(bad))
    assert pointing_game(_peaked(bad), _mask()) == 0.0
    inside = _peaked(0.0)
    inside[2, 2] = bad  # also inside the mask, also +inf (which argmax would pick)
    assert pointing_game(inside, _mask()) == 0.0


@pytest.mark.parametrize("bad", BAD)
def test_energy_and_energy_pos_are_the_chance_level(bad, tiny):
    mask = _mask()
    assert energy_in_mask(_peaked(0.0), mask) == 1.0
    assert energy_in_mask(_peaked(bad), mask) == mask.mean()
    assert no_positive_mass(_peaked(bad))
    # energy_pos: a signed per-token raw map with one non-finite token, at pixel resolution
    rows, cols = tiny.grid
    raw = np.linspace(-1, 1, 1 + rows * cols)
    raw[3] = bad
    pixels = raw_pixel_map(raw, tiny.grid, tiny.image_size)
    big = np.zeros(tiny.image_size, bool)
    big[: tiny.image_size[0] // 2] = True
    assert energy_in_mask(pixels, big) == big.mean() and no_positive_mass(pixels)


@pytest.mark.parametrize("bad", BAD)
def test_curves_treat_a_non_finite_map_as_one_tie_in_both_protocols(bad, tiny):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, *tiny.image_size, generator=g)
    ids = tiny.tokenize(["a red circle"])
    m = np.random.default_rng(0).random((1, *tiny.image_size))
    m[0, 5, 5] = bad
    np.testing.assert_array_equal(changed_share(m[0], [0, 8, m[0].size]),
                                  changed_share(np.zeros_like(m[0]), [0, 8, m[0].size]))
    flat = np.zeros_like(m)  # a constant map: the same single tie, so the same curves
    for kw in ({}, {"protocol": "rise",
                    "class_features": class_text_features(tiny, ["a red circle", "a ring"])}):
        got = insertion_deletion(tiny, pixels, ids, m, **kw)
        want = insertion_deletion(tiny, pixels, ids, flat, **kw)
        for k in ("insertion", "deletion", "insertion_curve", "deletion_curve"):
            assert np.isfinite(got[k]).all()
            np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("bad", BAD)
def test_confidence_drop_increase_count_non_finite_as_zero(bad, tiny):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, *tiny.image_size, generator=g)
    ids = tiny.tokenize(["a red circle", "a blue ring"])
    m = np.random.default_rng(1).random((2, *tiny.image_size))
    zeroed = m.copy()
    m[0, 1, 2], m[1, 0, 0] = bad, bad
    zeroed[0, 1, 2], zeroed[1, 0, 0] = 0.0, 0.0
    torch.testing.assert_close(perturb_image(pixels, m), perturb_image(pixels, zeroed),
                               rtol=0, atol=0)
    got = image_confidence(tiny, pixels, ids, m)
    want = image_confidence(tiny, pixels, ids, zeroed)
    for k in ("s0", "s1", "drop", "increase"):
        assert np.isfinite(got[k]).all()
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("bad", BAD)
def test_text_protocols_count_non_finite_as_zero(bad, tiny):
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(1, 3, *tiny.image_size, generator=g)
    ids = tiny.tokenize(["a red circle and a blue ring"])
    n = int(tiny.text_length(ids)[0])
    scores = np.linspace(0.1, 0.9, n)
    zeroed = scores.copy()
    scores[2], zeroed[2] = bad, 0.0
    assert degenerate_text(scores)
    for p in TEXT_PROTOCOLS:
        got = text_confidence(tiny, pixels, ids, [scores], p)
        want = text_confidence(tiny, pixels, ids, [zeroed], p)
        for k in ("s0", "s1", "drop", "increase"):
            assert np.isfinite(got[k]).all(), (p, k)
            np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("bad", BAD)
def test_text_ground_truth_is_a_miss_with_margin_zero(bad):
    scores = np.array([0.0, 0.9, 0.8, 0.1, 0.2, 1.0])
    assert text_ground_truth(scores, [1, 2], [3, 4])[0]  # finite: a hit
    for where in (1, 3, 5):  # in the present phrase, the absent one, elsewhere (EOT)
        s = scores.copy()
        s[where] = bad
        hit, margin = text_ground_truth(s, [1, 2], [3, 4])
        assert hit is False and margin == 0.0 and not math.isnan(margin)


def test_finite_map_keeps_finite_values_bit_for_bit():
    x = np.random.default_rng(4).normal(size=(5, 5))
    np.testing.assert_array_equal(finite_map(x), x)
    t = torch.from_numpy(x)
    assert torch.equal(finite_map(t), t)
    y = x.copy()
    y[0, 0], y[1, 1], y[2, 2] = BAD
    assert (finite_map(y)[[0, 1, 2], [0, 1, 2]] == 0).all()
    assert isinstance(finite_map(torch.from_numpy(y)), torch.Tensor)
