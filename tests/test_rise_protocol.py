"""RISE's insertion/deletion protocol (``protocol="rise"``) checked against references that do not
come from the code under test: a toy model with a closed-form AUC, and numbers computed once with
the RISE authors' own ``CausalMetric`` (``tests/fixtures/rise_reference.json``, whose
``provenance`` says how) on the committed fixture ``tests/fixtures/rise_fixture.npz``."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nibcore
from noise import assert_paths_close
from nibcore.inputs import prepare_images
from nibcore.metrics import (CURVE_PROTOCOLS, CURVE_STEPS, class_text_features,
                             insertion_deletion, rise_auc, rise_blur, rise_counts, rise_kernel,
                             rise_insertion_deletion)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def fixture():
    return np.load(FIXTURES / "rise_fixture.npz")


@pytest.fixture(scope="module")
def reference():
    ref = json.loads((FIXTURES / "rise_reference.json").read_text())
    digest = hashlib.sha256((FIXTURES / "rise_fixture.npz").read_bytes()).hexdigest()
    assert ref["fixture_sha256"] == digest, "the reference numbers belong to another fixture"
    return ref


def _tiny_classifier(fx):
    """The fixture's classifier: logits = avg_pool2d(x, 8).flatten(1) @ W.T + b (5 classes)."""
    w, b = torch.from_numpy(fx["tiny_weight"]), torch.from_numpy(fx["tiny_bias"])
    return lambda x: F.avg_pool2d(x, 8).flatten(1) @ w.T + b


def _tiny_pixels(fx) -> torch.Tensor:
    x = torch.from_numpy(fx["tiny_images"].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return ((x - 0.5) / 0.25).contiguous()


# --- the authors' CausalMetric ---------------------------------------------------------------

@pytest.mark.parametrize("key", ["tiny_step64", "tiny_step48"])
def test_matches_the_authors_causal_metric_on_the_tiny_classifier(fixture, reference, key):
    """Measured when the reference was made: AUCs agree to 5.4e-8 relative, curves to 3.9e-7
    absolute (float32 softmax in their code, float64 here); asserted within the float noise
    between numeric paths (FLOAT_NOISE_RTOL, 1e-4)."""
    ref = reference[key]
    out = rise_insertion_deletion(_tiny_classifier(fixture), _tiny_pixels(fixture),
                                  fixture["tiny_maps"], step=ref["step"], rows_per_call=50)
    for c in ("insertion", "deletion"):
        assert out[f"{c}_curve"].shape == np.shape(ref[f"{c}_curve"])
        assert_paths_close(out[f"{c}_curve"], ref[f"{c}_curve"])
        assert_paths_close(out[c] / 100, ref[c])


def test_matches_the_authors_causal_metric_on_mini_clip_over_the_scene_prompts(fixture,
                                                                              reference):
    """The CLIP path (``insertion_deletion(..., protocol="rise")``: class prompts' features,
    the model's logit scale, softmax over the 30 scene prompts) on two held-out scenes.
    Measured: AUCs agree to 1.3e-7 relative, curves to 2e-6 absolute."""
    model = nibcore.load_model("mini")
    ref = reference["mini_scenes_step64"]
    pixels = prepare_images(model, [Image.fromarray(a) for a in fixture["scene_images"]])
    features = class_text_features(model, reference["mini_prompts"])
    out = insertion_deletion(model, pixels, None, fixture["scene_maps"], protocol="rise",
                             class_features=features)
    assert out["insertion_curve"].shape == (2, 65)  # one row per step at 64 x 64
    for c in ("insertion", "deletion"):
        assert_paths_close(out[f"{c}_curve"], ref[f"{c}_curve"])
        assert_paths_close(out[c] / 100, ref[c])


# --- a closed-form toy model -----------------------------------------------------------------

def _stripes() -> torch.Tensor:
    """A 64 × 64 image: channel 0 alternates +1 / −1 column by column, channels 1–2 are 0. A
    blur of width 11 averages the stripes to almost 0, so |x| > 0.5 tells an original pixel."""
    x = torch.zeros(1, 3, 64, 64, dtype=torch.float32)
    x[0, 0] = torch.where(torch.arange(64) % 2 == 0, 1.0, -1.0)[None, :].expand(64, 64)
    return x


def _top_half_model(x: torch.Tensor) -> torch.Tensor:
    """Two classes with p(class 0) = q = (1 + m) / 3, where m is the share of the top half's
    pixels (rows 0–31) that still show the original stripes: logits ``log q, log(1 − q)``."""
    m = (x[:, 0, :32].abs() > 0.5).double().mean(dim=(1, 2))
    q = (1 + m) / 3
    return torch.stack([q.log(), (1 - q).log()], dim=1)


def test_closed_form_toy_model():
    """The map ranks whole rows, top row first (a step is one row of 64 pixels, so ties within
    a row cannot matter); the curve has n = 64 steps, point k at t = k/64.

    The top class on the original image (m = 1, q = 2/3) is class 0. Insertion reveals rows
    0, 1, …: m = min(k, 32)/32 = min(2t, 1). Deletion zeroes them in the same order: m =
    max(0, 1 − 2t). Both curves are piecewise linear in t with their kink at t = 1/2, a grid
    point, so RISE's trapezoid equals the integral:

    insertion = ∫₀^½ (1 + 2t)/3 dt + ∫½^1 2/3 dt = (½ + ¼)/3 + 1/3 = 7/12,
    deletion  = ∫₀^½ (2 − 2t)/3 dt + ∫½^1 1/3 dt = (1 − ¼)/3 + 1/6 = 5/12.
    """
    x = _stripes()
    assert rise_blur(x).abs().max() < 0.5  # the premise: the blur erases the stripes
    rows = np.repeat(np.arange(64, 0, -1, dtype=float)[:, None], 64, axis=1)
    out = rise_insertion_deletion(_top_half_model, x, rows)
    assert out["top_class"].tolist() == [0]
    t = np.arange(65) / 64
    np.testing.assert_allclose(out["insertion_curve"][0], (1 + np.minimum(2 * t, 1)) / 3,
                               rtol=1e-12)
    np.testing.assert_allclose(out["deletion_curve"][0], (1 + np.maximum(1 - 2 * t, 0)) / 3,
                               rtol=1e-12)
    np.testing.assert_allclose(out["insertion"], [100 * 7 / 12], rtol=1e-12)
    np.testing.assert_allclose(out["deletion"], [100 * 5 / 12], rtol=1e-12)
    # the reversed map reveals the bottom half first: the mirror image of both curves
    back = rise_insertion_deletion(_top_half_model, x, rows[::-1].copy())
    np.testing.assert_allclose(back["insertion"], [100 * 5 / 12], rtol=1e-12)
    np.testing.assert_allclose(back["deletion"], [100 * 7 / 12], rtol=1e-12)


# --- the pieces ------------------------------------------------------------------------------

def test_steps_points_and_auc():
    counts = rise_counts(64 * 64, 64)
    assert len(counts) == 65 and counts[1] == 64 and counts[-1] == 4096
    counts = rise_counts(100, 30)  # the last step changes fewer pixels
    assert counts.tolist() == [0, 30, 60, 90, 100]
    np.testing.assert_allclose(rise_auc([1.0, 0.5, 0.0]), 0.5)
    np.testing.assert_allclose(rise_auc(np.array([[0.0, 1.0], [1.0, 1.0]])), [0.5, 1.0])
    kernel = rise_kernel(11, 5)
    assert kernel.shape == (11, 11) and abs(kernel.sum() - 1) < 1e-12
    np.testing.assert_allclose(kernel, kernel.T)
    np.testing.assert_allclose(kernel, kernel[::-1])


def test_errors_are_one_line_and_name_the_problem(tiny):
    pixels = torch.zeros(1, 3, *tiny.image_size)
    ids = tiny.tokenize(["a red circle"])
    maps = np.random.default_rng(0).random((1, *tiny.image_size))
    with pytest.raises(ValueError, match="unknown insertion/deletion protocol 'RISE'"):
        insertion_deletion(tiny, pixels, ids, maps, protocol="RISE")
    with pytest.raises(ValueError, match="needs class_features"):
        insertion_deletion(tiny, pixels, ids, maps, protocol="rise")
    with pytest.raises(ValueError, match="step must be a positive int"):
        rise_counts(100, 0)
    with pytest.raises(ValueError, match="klen must be a positive odd int"):
        rise_kernel(10, 5)
    with pytest.raises(ValueError, match="do not match"):
        rise_insertion_deletion(lambda x: x.flatten(1)[:, :2], pixels, np.ones((1, 5, 5)))
    with pytest.raises(ValueError, match="K >= 2"):
        insertion_deletion(tiny, pixels, ids, maps, protocol="rise",
                           class_features=torch.ones(1, 32))
    assert CURVE_PROTOCOLS == ("ours", "rise")


def test_ours_stays_the_default(tiny):
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 3, *tiny.image_size, generator=g)
    ids = tiny.tokenize(["a red circle", "a blue ring"])
    maps = np.random.default_rng(3).random((2, *tiny.image_size))
    default = insertion_deletion(tiny, pixels, ids, maps)
    ours = insertion_deletion(tiny, pixels, ids, maps, protocol="ours")
    assert set(default) == {"insertion", "deletion", "insertion_curve", "deletion_curve"}
    for k in default:
        np.testing.assert_array_equal(default[k], ours[k])
    assert default["insertion_curve"].shape == (2, CURVE_STEPS + 1)
    prompts = ["a red circle", "a blue ring", "a green grid"]
    rise = insertion_deletion(tiny, pixels, ids, maps, protocol="rise",
                              class_features=class_text_features(tiny, prompts))
    assert rise["insertion_curve"].shape == (2, tiny.image_size[1] + 1)
    assert ((rise["insertion_curve"] >= 0) & (rise["insertion_curve"] <= 1)).all()
    by_ids = insertion_deletion(tiny, pixels, ids, maps, protocol="rise",
                                class_features=tiny.tokenize(prompts))  # prompt ids: the same
    for k in rise:
        np.testing.assert_array_equal(by_ids[k], rise[k])
