"""Tie-safe metrics: the pointing game and both insertion/deletion protocols give the same
values for a map mirrored or rotated together with its image and mask (METRICS_VERSION 2)."""

import numpy as np
import pytest
import torch

from nibcore.metrics import (changed_share, curve_inputs, insertion_deletion, pointing_game,
                             rise_counts, rise_curve_inputs, rise_insertion_deletion)

TRANSFORMS = {"mirror": lambda a: np.flip(a, -1), "flip": lambda a: np.flip(a, -2),
              "rotate": lambda a: np.rot90(a, 1, axes=(-2, -1)),
              "rotate180": lambda a: np.rot90(a, 2, axes=(-2, -1))}


def _tied_map(size: int, seed: int = 0) -> np.ndarray:
    """A Grad-CAM-like map: a large exact-zero region and a few tied plateaus."""
    rng = np.random.default_rng(seed)
    m = np.zeros((size, size))
    m[size // 4: size // 2, size // 4:] = rng.random((size // 4, size - size // 4))
    m[size // 2:, : size // 3] = 0.5  # a plateau
    m[1, 1] = m[size - 2, size - 2] = m.max() + 1  # the maximum, twice
    return m


@pytest.mark.parametrize("name", TRANSFORMS)
def test_pointing_game_is_mirror_and_rotation_invariant(name):
    t = TRANSFORMS[name]
    m = _tied_map(16)
    mask = np.zeros((16, 16), bool)
    mask[:8, :8] = True  # holds one of the two maximal pixels
    assert pointing_game(m, mask) == 0.5
    assert pointing_game(t(m).copy(), t(mask).copy()) == 0.5
    # the old rule (the first maximal pixel in raster order) would change with the transform
    first = [bool(t(mask).flat[int(np.argmax(t(m)))]) for t in TRANSFORMS.values()]
    assert len(set(first)) == 2


def test_changed_share_is_the_expected_mask_of_a_random_tie_order():
    m = np.array([[3.0, 1.0], [1.0, 1.0]])
    share = changed_share(m, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(share, [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1 / 3, 1 / 3, 1 / 3],
                                       [1, 2 / 3, 2 / 3, 2 / 3], [1, 1, 1, 1]])
    rng = np.random.default_rng(0)  # the average of random tie orders converges to it
    runs = []
    for _ in range(3000):
        order = np.concatenate([[0], 1 + rng.permutation(3)])
        runs.append([np.isin(np.arange(4), order[:c]) for c in (2, 3)])
    np.testing.assert_allclose(np.mean(runs, axis=0), share[2:4], atol=0.03)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_curve_images_move_with_the_map(name):
    """The images of both curves for a transformed image and map are the transformed images:
    which pixels a point changes does not depend on where they sit (a model need not be
    mirror-invariant, so the check is on what the metric feeds it)."""
    t = TRANSFORMS[name]
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 16, 16, generator=g)
    m = _tied_map(16)
    tt = lambda x: torch.from_numpy(t(x.numpy()).copy())  # noqa: E731
    for a, b in zip(curve_inputs(pixels, m, steps=7), curve_inputs(tt(pixels), t(m).copy(), 7)):
        torch.testing.assert_close(tt(a), b, rtol=0, atol=0)
    counts = rise_counts(16 * 16, 16)
    share, moved = changed_share(m, counts), changed_share(t(m).copy(), counts)
    np.testing.assert_array_equal(t(share.reshape(-1, 16, 16)), moved.reshape(-1, 16, 16))
    blur = torch.zeros_like(pixels)
    torch.testing.assert_close(tt(rise_curve_inputs(pixels, blur, share)),
                               rise_curve_inputs(tt(pixels), blur, moved), rtol=0, atol=0)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_rise_aucs_are_mirror_and_rotation_invariant(name):
    """With a classifier that does not look at positions (mean colour, then linear), the RISE
    protocol's AUCs of a transformed image and map are the same numbers."""
    t = TRANSFORMS[name]
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 16, 16, generator=g)
    weight = torch.randn(3, 4, generator=g)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(-2, -1)) @ weight

    m = _tied_map(16)[None]
    a = rise_insertion_deletion(logits, pixels, m, step=16)
    b = rise_insertion_deletion(logits, torch.from_numpy(t(pixels.numpy()).copy()),
                                t(m).copy(), step=16)
    for k in ("insertion", "deletion"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)  # float32 sums in another order


def test_insertion_deletion_runs_on_a_tied_map(tiny):
    h, w = tiny.image_size
    pixels = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    got = insertion_deletion(tiny, pixels, tiny.tokenize(["a red circle"]), _tied_map(h)[None])
    assert np.isfinite(got["insertion"]).all() and np.isfinite(got["deletion"]).all()
