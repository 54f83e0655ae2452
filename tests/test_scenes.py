"""The ground-truth scene world: determinism, exact masks, seed ranges, negatives, input checks."""

import numpy as np
import pytest

from nibcore.world import scenes
from open_clip.tokenizer import SimpleTokenizer


def test_deterministic_from_seed():
    a, b = scenes.sample(123), scenes.sample(123)
    assert np.array_equal(np.array(a.image), np.array(b.image))
    assert np.array_equal(a.masks, b.masks)
    assert a.caption == b.caption and a.objects == b.objects
    assert not np.array_equal(np.array(a.image), np.array(scenes.sample(124).image))


@pytest.mark.parametrize("seed", range(30))
def test_masks_match_object_pixels(seed):
    s = scenes.sample(seed)
    img, bg = np.array(s.image), np.array(s.background)
    k = len(s.objects)
    assert img.shape == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, 3) and s.masks.shape == (
        k,
        *img.shape[:2],
    )
    assert s.masks.dtype == bool and s.masks.sum(0).max() == 1  # non-empty, never overlapping
    assert all(m.any() for m in s.masks)
    differs = (img != bg).any(-1)
    assert np.array_equal(differs, s.masks.any(0))
    for i in range(k):
        assert np.array_equal(np.array(s.occluded(i))[s.masks[i]], bg[s.masks[i]])


def test_scene_fields_and_captions():
    s = scenes.sample(7, n_objects=3)
    assert len(s.objects) == len(s.colours) == len(s.shapes) == 3 and len(set(s.objects)) == 3
    assert s.objects == [f"{c} {t}" for c, t in zip(s.colours, s.shapes)]
    assert s.caption == f"a {s.objects[0]}, a {s.objects[1]} and a {s.objects[2]}"
    assert s.caption_for([2]) == f"a {s.objects[2]}"
    assert s.caption_for([1, 0]) == f"a {s.objects[1]} and a {s.objects[0]}"
    assert {len(scenes.sample(i).objects) for i in range(50)} == {1, 2, 3}


def test_vocabulary_is_single_bpe_tokens():
    tok = SimpleTokenizer()
    for word in scenes.COLOURS + scenes.SHAPES:
        assert len(tok.encode(word)) == 1, word


def test_seed_ranges_disjoint():
    tr, ho = scenes.TRAIN_SEEDS, scenes.HELDOUT_SEEDS
    assert tr.step == ho.step == 1 and (tr.stop <= ho.start or ho.stop <= tr.start)
    assert [s.seed for s in scenes.heldout(3, start=5)] == [ho[5], ho[6], ho[7]]


@pytest.mark.parametrize("seed", range(20))
def test_negatives_absent_and_differ_in_one_attribute(seed):
    s = scenes.sample(scenes.HELDOUT_SEEDS[seed], n_objects=3)
    rng = np.random.default_rng(seed)
    for i in range(3):
        for kind in ("colour", "shape"):
            neg = s.negative(i, kind, rng)
            colour, shape = neg.split()
            assert neg not in s.objects and colour in scenes.COLOURS and shape in scenes.SHAPES
            if kind == "colour":
                assert shape == s.shapes[i] and colour != s.colours[i]
            else:
                assert colour == s.colours[i] and shape != s.shapes[i]
    assert s.negative(0, "shape", 5) == s.negative(0, "shape", 5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: scenes.sample(-1),
        lambda: scenes.sample(0, n_objects=0),
        lambda: scenes.sample(0, n_objects=4),
        lambda: scenes.heldout(2, n_objects=5),
        lambda: scenes.heldout(-1),
        lambda: scenes.sample(0).negative(0, "size", 0),
        lambda: scenes.sample(0).caption_for([]),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
