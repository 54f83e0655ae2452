"""The paper's metrics as computed (image/text Confidence Drop & Increase), ground-truth metrics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noise import assert_paths_close
from nibcore.inputs import prepare_images
from nibcore.metrics import (CURVE_STEPS, TEXT_PROTOCOLS, curve_inputs, degenerate_map,
                             degenerate_text, drop_increase, energy_in_mask, hardware,
                             image_confidence, insertion_deletion,
                             no_positive_mass, perturb_image, phrase_positions, changed_share,
                             pointing_game, raw_pixel_map, scaled_text_embedding,
                             text_confidence, text_ground_truth, text_perturbation)


@pytest.fixture(scope="module")
def pixels(tiny):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, *tiny.image_size, generator=g)


def _weight(model):
    return model.text.token_embedding.weight


# --- image side ------------------------------------------------------------------------------

def test_all_ones_map_changes_nothing(tiny, pixels):
    ids = tiny.tokenize(["a red circle", "a blue ring"])
    out = image_confidence(tiny, pixels, ids, torch.ones(2, *tiny.image_size))
    np.testing.assert_array_equal(out["s0"], out["s1"])
    np.testing.assert_array_equal(out["drop"], 0.0)
    np.testing.assert_array_equal(out["increase"], 0.0)


def test_all_zeros_map_is_the_dataset_mean_image(tiny, pixels, picture):
    assert torch.count_nonzero(perturb_image(pixels, np.zeros((2, *tiny.image_size)))) == 0
    # a zero in normalised space is the dataset-mean colour
    mean_rgb = tuple(round(255 * m) for m in tiny.mean)
    from PIL import Image
    mean_image = Image.new("RGB", tiny.image_size[::-1], mean_rgb)
    assert prepare_images(tiny, mean_image).abs().max() < 0.01
    ids = tiny.tokenize(["a red circle", "a blue ring"])
    out = image_confidence(tiny, pixels, ids, torch.zeros(2, *tiny.image_size))
    with torch.no_grad():
        text = tiny.encode_text(ids)
        s1 = F.cosine_similarity(tiny.encode_image(torch.zeros_like(pixels)), text, dim=-1)
        s0 = F.cosine_similarity(tiny.encode_image(pixels), text, dim=-1)
    assert_paths_close(out["s1"], s1.numpy())
    assert_paths_close(out["s0"], s0.numpy())


def test_soft_mask_broadcasts_over_rgb(pixels):
    m = torch.rand(2, *pixels.shape[2:])
    out = perturb_image(pixels, m)
    for c in range(3):
        torch.testing.assert_close(out[:, c], pixels[:, c] * m)
    with pytest.raises(ValueError, match="do not match"):
        perturb_image(pixels, torch.ones(2, 5, 5))


def test_drop_increase_formulas():
    drop, incr = drop_increase([0.5, 0.2, 0.3], [0.3, 0.4, 0.3])
    np.testing.assert_allclose(drop, [20.0, 0.0, 0.0])  # absolute difference x 100
    np.testing.assert_array_equal(incr, [0.0, 100.0, 0.0])  # strict s1 > s0


# --- text side -------------------------------------------------------------------------------

CAPTION = "a dog and a cat"  # "a" occurs twice: a repeated token id


def _ids_scores(tiny, caption=CAPTION, seed=0):
    ids = tiny.tokenize([caption])[0]
    n = int(tiny.text_length(ids[None])[0])
    scores = np.random.default_rng(seed).uniform(0.1, 0.9, size=n)
    return ids, n, scores


def test_paper_protocol_strips_sot_eot_and_scales_table_rows(tiny):
    ids, n, scores = _ids_scores(tiny)
    p = text_perturbation(ids, scores, "paper")
    content = ids[1:n - 1]
    # stripped: content ids first, zero padding after, no SOT/EOT anywhere
    assert p.ids0.tolist() == p.ids1.tolist()
    assert p.ids1[: n - 2].tolist() == content.tolist()
    assert (p.ids1[n - 2:] == 0).all()
    assert int(ids[0]) not in p.ids1.tolist() and int(ids[n - 1]) not in p.ids1.tolist()
    assert (p.scale0 == 1).all()
    # the embedding equals a table copy whose rows were scaled once per occurrence
    weight = _weight(tiny)
    table = weight.detach().clone().double()
    for tok, v in zip(content.tolist(), scores[1:-1]):
        table[tok] *= v
    pos = tiny.text.positional_embedding.double()
    expected = table[p.ids1] + pos
    built = scaled_text_embedding(tiny, p.ids1[None], p.scale1[None])[0].double()
    torch.testing.assert_close(built, expected, rtol=1e-5, atol=1e-6)
    # the repeated token "a" got the product of both its map values, at both positions
    a = int(content[0])
    where = [j for j, t in enumerate(content.tolist()) if t == a]
    assert len(where) == 2
    prod = scores[1 + where[0]] * scores[1 + where[1]]
    assert all(math.isclose(float(p.scale1[j]), prod) for j in where)
    # unscaled: the ordinary embedding of the stripped ids
    torch.testing.assert_close(scaled_text_embedding(tiny, p.ids0[None], p.scale0[None]),
                               tiny.text.embed(p.ids0[None]))


def test_paper_protocol_pools_at_the_largest_content_id(tiny):
    """The reproduced quirk: s0 is the feature pooled at the largest remaining token id."""
    ids, n, scores = _ids_scores(tiny)
    p = text_perturbation(ids, scores, "paper")
    pix = torch.randn(1, 3, *tiny.image_size, generator=torch.Generator().manual_seed(1))
    out = text_confidence(tiny, pix, ids[None], [scores], "paper")
    with torch.no_grad():
        x = tiny.text.run_blocks(tiny.text.embed(p.ids0[None]), 0, tiny.text.n_blocks)
        x = tiny.clip.ln_final(x)
        j = int(p.ids0.argmax())
        assert j < n - 2  # a content position, not where EOT was
        feat = x[:, j] @ tiny.clip.text_projection
        s0 = F.cosine_similarity(feat, tiny.encode_image(pix), dim=-1)
    assert_paths_close(out["s0"], s0.numpy())


def test_m2ib_protocol_follows_m2ibs_script(tiny):
    """SOT/EOT stripped first (as the paper's protocol), keep = score > median (strict),
    dropped ids -> 0; s0 on the stripped ids."""
    ids, n, _ = _ids_scores(tiny)
    content_scores = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
    assert n - 2 == 5
    scores = np.concatenate([[0.0], content_scores, [1.0]])
    p = text_perturbation(ids, scores, "m2ib")
    stripped = torch.zeros_like(ids)
    stripped[: n - 2] = ids[1: n - 1]
    assert p.ids0.tolist() == stripped.tolist()  # SOT and EOT removed from s0's input too
    kept = content_scores > 0.5  # the median itself (0.5) is dropped: strict inequality
    expect = stripped.clone()
    expect[: n - 2][torch.from_numpy(~kept)] = 0
    assert p.ids1.tolist() == expect.tolist()
    assert (p.scale0 == 1).all() and (p.scale1 == 1).all()
    # even count: median is the mean of the middle two (0.5); 0.2 and below dropped
    ids2, n2, _ = _ids_scores(tiny, "a dog and cat")
    s2 = np.array([0.0, 0.1, 0.2, 0.8, 0.9, 1.0])
    assert n2 == 6
    p2 = text_perturbation(ids2, s2, "m2ib")
    assert (p2.ids1[0:2] == 0).all() and (p2.ids1[2:4] == ids2[3:5]).all()
    # a constant map keeps nothing
    p3 = text_perturbation(ids, np.full(n, 0.4), "m2ib")
    assert (p3.ids1 == 0).all()


def test_clean_protocol_scales_positions_and_keeps_sot_eot(tiny):
    ids, n, scores = _ids_scores(tiny)
    p = text_perturbation(ids, scores, "clean")
    assert p.ids0.tolist() == ids.tolist() == p.ids1.tolist()
    np.testing.assert_allclose(p.scale1[1:n - 1].numpy(), scores[1:-1])
    assert (p.scale1[0] == 1) and (p.scale1[n - 1:] == 1).all()
    e = scaled_text_embedding(tiny, p.ids1[None], p.scale1[None])[0]
    plain = tiny.text.embed(ids[None])[0]
    torch.testing.assert_close(e[0], plain[0])
    torch.testing.assert_close(e[n - 1:], plain[n - 1:])
    weight, pos = _weight(tiny), tiny.text.positional_embedding
    for j in range(1, n - 1):  # repeated ids scaled independently, per position
        torch.testing.assert_close(e[j], weight[ids[j]] * float(scores[j]) + pos[j])


@pytest.mark.parametrize("protocol", TEXT_PROTOCOLS)
def test_all_ones_text_map_changes_nothing_and_model_untouched(tiny, protocol):
    ids = tiny.tokenize([CAPTION, "a red circle"])
    n = tiny.text_length(ids).tolist()
    pix = torch.randn(2, 3, *tiny.image_size, generator=torch.Generator().manual_seed(2))
    before = _weight(tiny).detach().clone()
    out = text_confidence(tiny, pix, ids, [np.ones(k) for k in n], protocol)
    if protocol == "m2ib":  # strict > median: a constant map keeps no token at all
        assert not np.allclose(out["s1"], out["s0"])
    else:
        assert_paths_close(out["s1"], out["s0"])
        assert (out["drop"] < 1e-4).all()
    zeros = text_confidence(tiny, pix, ids, [np.zeros(k) for k in n], protocol)
    assert not np.allclose(zeros["s1"], zeros["s0"])  # every protocol: a zero map removes
    if protocol == "m2ib":  # strict > median: constant maps, ones or zeros, both keep nothing
        assert_paths_close(zeros["s1"], out["s1"])
    assert torch.equal(_weight(tiny), before)


def test_text_protocol_errors(tiny):
    ids, n, scores = _ids_scores(tiny)
    with pytest.raises(ValueError, match="real tokens"):
        text_perturbation(ids, scores[:-1], "paper")
    with pytest.raises(ValueError, match="unknown text protocol"):
        text_perturbation(ids, scores, "nope")


# --- ground truth ----------------------------------------------------------------------------

def test_pointing_game():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    m = np.zeros((8, 8))
    m[3, 3] = 1.0
    assert pointing_game(m, mask) == 1.0
    m[6, 6] = 2.0
    assert pointing_game(m, mask) == 0.0
    assert pointing_game(np.ones((8, 8)), mask) == 0.0  # a constant map points nowhere
    m[2, 2] = 2.0  # the maximum shared by one pixel inside and one outside: half a hit
    assert pointing_game(m, mask) == 0.5
    big = np.zeros((16, 16))
    big[6, 6] = 1.0
    assert pointing_game(big, mask) == 1.0  # mask resized (nearest) to the map


def test_energy_in_mask():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert math.isclose(energy_in_mask(np.ones((10, 10)), mask), 0.5)
    m = np.where(mask, 1.0, 0.0)
    assert math.isclose(energy_in_mask(m, mask), 1.0)
    signed = np.where(mask, 1.0, -3.0)  # negative mass outside does not count
    assert math.isclose(energy_in_mask(signed, mask), 1.0)
    m = np.where(mask, 3.0, 1.0)
    assert math.isclose(energy_in_mask(m, mask), 0.75)
    # no positive mass: the chance level (the mask's area share), never NaN
    assert energy_in_mask(np.zeros((10, 10)), mask) == 0.5
    assert energy_in_mask(-np.ones((10, 10)), mask) == 0.5
    assert no_positive_mass(-np.ones((10, 10))) and not no_positive_mass(m)


def test_degenerate_maps():
    assert degenerate_map(np.zeros((4, 4))) and degenerate_map(np.full((4, 4), 0.3))
    bad = np.ones((4, 4))
    bad[0, 0] = np.nan
    assert degenerate_map(bad)
    assert not degenerate_map(np.eye(4))
    assert degenerate_text([0.0, 0.5, 0.5, 1.0])  # content tokens equal
    assert degenerate_text([0.0, 0.5, 1.0])  # one content token: nothing to rank
    assert not degenerate_text([1.0, 0.2, 0.5, 0.0])


def test_changed_share_and_curve_inputs(pixels):
    m = np.arange(16, dtype=float).reshape(4, 4)
    share = changed_share(m, [0, 3, 16])
    assert share[1].nonzero()[0].tolist() == [13, 14, 15] and set(share.ravel()) == {0.0, 1.0}
    np.testing.assert_array_equal(changed_share(np.zeros((4, 4)), [0, 4, 16]),
                                  np.repeat([[0.0], [0.25], [1.0]], 16, axis=1))
    img = pixels[0]
    h, w = img.shape[-2:]
    scores = np.random.default_rng(1).random((h, w))
    deletion, insertion = curve_inputs(img, scores, steps=4)
    assert deletion.shape == insertion.shape == (5, *img.shape)
    torch.testing.assert_close(deletion[0], img)  # nothing deleted yet
    assert torch.count_nonzero(deletion[-1]) == 0  # everything deleted
    assert torch.count_nonzero(insertion[0]) == 0
    torch.testing.assert_close(insertion[-1], img)
    torch.testing.assert_close(deletion + insertion, img[None].expand_as(deletion))
    # after step 1 the deleted pixels are the top quarter of the map
    k = round(h * w / 4)
    top = np.argsort(-scores.ravel(), kind="stable")[:k]
    gone = (deletion[1] == 0).all(dim=0).flatten().nonzero()[:, 0].numpy()
    assert sorted(gone.tolist()) == sorted(top.tolist())
    with pytest.raises(ValueError, match="does not match"):
        curve_inputs(img, np.ones((3, 3)))


def test_insertion_deletion_auc(tiny, pixels):
    ids = tiny.tokenize(["a red circle", "a blue ring"])
    maps = np.random.default_rng(2).random((2, *tiny.image_size))
    out = insertion_deletion(tiny, pixels, ids, maps, rows_per_call=7)
    assert out["deletion_curve"].shape == (2, CURVE_STEPS + 1)
    # the curves' ends are the original image and the baseline (all-zeros) image
    full = image_confidence(tiny, pixels, ids, np.ones((2, *tiny.image_size)))["s0"]
    base = image_confidence(tiny, pixels, ids, np.zeros((2, *tiny.image_size)))["s1"]
    np.testing.assert_allclose(out["deletion_curve"][:, 0], full, atol=1e-5)
    np.testing.assert_allclose(out["deletion_curve"][:, -1], base, atol=1e-5)
    np.testing.assert_allclose(out["insertion_curve"][:, 0], base, atol=1e-5)
    c = out["insertion_curve"]
    np.testing.assert_allclose(out["insertion"], 100 * np.trapezoid(c, dx=1 / CURVE_STEPS,
                                                                      axis=1), rtol=1e-10)
    # batching does not change the numbers
    one = insertion_deletion(tiny, pixels[:1], ids[:1], maps[:1])
    np.testing.assert_allclose(one["deletion"], out["deletion"][:1], rtol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        insertion_deletion(tiny, pixels, ids, maps, steps=0)


def test_raw_pixel_map_keeps_sign(tiny):
    rows, cols = tiny.grid
    raw = np.linspace(-1, 1, 1 + rows * cols)
    out = raw_pixel_map(raw, tiny.grid, tiny.image_size)
    assert out.shape == tiny.image_size and out.min() < 0 < out.max()
    pixel = np.random.rand(*tiny.image_size)
    np.testing.assert_array_equal(raw_pixel_map(pixel, tiny.grid, tiny.image_size),
                                  pixel.astype(np.float32))  # per-pixel raw: returned as is
    flat = raw_pixel_map(np.full(1 + rows * cols, -2.5), tiny.grid, tiny.image_size)
    np.testing.assert_allclose(flat, -2.5, rtol=1e-6)  # constant tokens: constant, unnormalised


def test_phrase_positions_and_text_ground_truth(tiny):
    caption = "a red circle and a blue ring"
    ids = tiny.tokenize([caption])[0]
    pos = phrase_positions(tiny, caption, "blue ring")
    assert ids[pos].tolist() == tiny.tokenizer.encode("blue ring")
    red = phrase_positions(tiny, caption, "red circle")
    assert red == [2, 3] and pos == [6, 7]
    scores = np.zeros(int(tiny.text_length(ids[None])[0]))
    scores[red] = [0.8, 0.6]
    scores[pos] = [0.5, 0.1]
    hit, margin = text_ground_truth(scores, red, pos)
    assert hit and math.isclose(margin, 0.4)
    assert text_ground_truth(scores, pos, red)[0] is False
    with pytest.raises(ValueError, match="does not occur"):
        phrase_positions(tiny, caption, "green grid")
    with pytest.raises(ValueError, match="does not occur"):
        phrase_positions(tiny, caption, "red circ")  # whole words only


def test_hardware_string():
    s = hardware()
    assert torch.__version__ in s and "threads" in s and "CPU" in s
