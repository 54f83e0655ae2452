import numpy as np
import pytest
import torch
from PIL import Image

from noise import assert_paths_close
import nibcore
from nibcore.base import cosine


@pytest.mark.parametrize("side", ["image", "text"])
def test_completeness_schedule_closes_the_gap(tiny, picture, side):
    a = nibcore.explain(tiny, picture, "a red circle", side=side, schedule="completeness")
    assert abs(a.f1 - a.f0) > 1e-3
    assert abs(a.completeness_gap) / abs(a.f1 - a.f0) < 1e-3


@pytest.mark.parametrize("side", ["image", "text"])
def test_paper_schedule_misses_what_completeness_closes(tiny, picture, side):
    """The right Riemann sum never samples λ near 0: its gap is visible on the tiny model and at
    least ten times the completeness schedule's (f(1) and f(0) are the same for both)."""
    paper = nibcore.explain(tiny, picture, "a red circle", side=side)
    closed = nibcore.explain(tiny, picture, "a red circle", side=side, schedule="completeness")
    assert paper.params["schedule"] == "paper"
    assert_paths_close((paper.f1, paper.f0), (closed.f1, closed.f0))
    assert abs(paper.completeness_gap) > 1e-3 * abs(paper.f1 - paper.f0)
    assert abs(paper.completeness_gap) > 10 * abs(closed.completeness_gap)


def test_f1_and_f0_are_the_objective_at_the_ends(tiny, picture):
    a = nibcore.explain(tiny, picture, "a red circle", side="image")
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])
    with torch.no_grad():
        text = tiny.encode_text(ids)
        assert a.f1 == pytest.approx(float(cosine(tiny.encode_image(pixels), text)), abs=1e-5)
        z = tiny.image.lower(pixels, a.extras["layer"])
        f0 = cosine(tiny.image.upper(0 * z, a.extras["layer"]), text)
    assert_paths_close(a.f0, float(f0))


def test_paper_schedule_is_the_right_riemann_sum(tiny, picture):
    """raw = Σ_c z ⊙ (1/n) Σ_i ∂f/∂z̃(i/n · z), recomputed here step by step."""
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])
    layer, n = 2, 4
    with torch.no_grad():
        text = tiny.encode_text(ids)
        z = tiny.image.lower(pixels, layer)
    grads = torch.zeros_like(z)
    for i in range(1, n + 1):
        zt = (i / n * z).requires_grad_(True)
        cosine(tiny.image.upper(zt, layer), text).sum().backward()
        grads += zt.grad / n
    expected = (z * grads).sum(-1)[0].numpy()
    a = nibcore.explain(tiny, picture, "a red circle", layer=layer, num_steps=n)
    assert_paths_close(a.raw, expected, rtol=1e-4)


@pytest.mark.parametrize("side", ["image", "text"])
def test_deterministic_bit_for_bit(tiny, picture, side):
    a = nibcore.explain(tiny, picture, "a red circle", side=side)
    b = nibcore.explain(tiny, picture, "a red circle", side=side)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.scores, b.scores)


@pytest.mark.parametrize("side", ["image", "text"])
def test_batched_equals_one_by_one(tiny, side):
    rng = np.random.RandomState(3)
    images = [Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8")) for _ in range(3)]
    texts = ["a red circle", "two blue squares on grass", "a cat"]
    batched = nibcore.explain(tiny, images, texts, side=side, rows_per_call=7)
    for image, text, a in zip(images, texts, batched):
        single = nibcore.explain(tiny, image, text, side=side)
        assert_paths_close(a.raw, single.raw, rtol=1e-4)
        assert a.text == text


def test_shapes_and_ranges(tiny, picture):
    img = nibcore.explain(tiny, picture, "a red circle and a cat", side="image")
    assert img.scores.shape == (32, 32) and img.scores.dtype == np.float32
    assert img.scores.min() == 0.0 and img.scores.max() == 1.0
    assert img.raw.shape == (1 + 16,)
    txt = nibcore.explain(tiny, picture, "a red circle and a cat", side="text")
    assert txt.tokens == ["<start_of_text>", "a", "red", "circle", "and", "a", "cat",
                          "<end_of_text>"]
    assert txt.scores.shape == txt.raw.shape == (8,)
    assert txt.scores.min() == 0.0 and txt.scores.max() == 1.0
    assert txt.content_scores.shape == (6,)


def test_signed_attributions_are_kept(tiny, picture):
    a = nibcore.explain(tiny, picture, "a red circle", side="image")
    assert (a.raw < 0).any() and (a.raw > 0).any()


def test_default_layer_is_the_papers_nine_of_twelve(tiny, picture):
    from nibcore.base import default_layer

    class T:  # a stand-in tower
        def __init__(self, n):
            self.n_blocks = n

    assert [default_layer(T(n)) for n in (1, 2, 3, 4, 6, 12, 24)] == [0, 0, 1, 2, 4, 9, 18]
    a = nibcore.explain(tiny, picture, "a red circle")
    assert a.extras["layer"] == 2  # 4 blocks: (3 * 4) // 4 = 3 would leave only the last block


def test_last_block_bottleneck_is_degenerate_on_the_text_side(tiny, picture):
    """At the input of the last block every token but EOT reaches the output only through
    LayerNorm (scale-invariant), so z_j · ∂f/∂z_j ≈ 0 there; two blocks above, it is not."""
    last = nibcore.explain(tiny, picture, "a red circle and a blue ring", side="text",
                           layer=tiny.text.n_blocks - 1)
    ok = nibcore.explain(tiny, picture, "a red circle and a blue ring", side="text")
    # raw runs SOT..EOT: the content tokens lie strictly between
    assert abs(last.raw[1:-1]).max() < 1e-3 * abs(last.raw[-1])
    assert abs(ok.raw[1:-1]).max() > 1e-2 * abs(ok.raw[-1])


def test_pass_counts_for_nib(tiny, picture):
    a = nibcore.explain(tiny, picture, "a red circle", num_steps=10)
    # text feature + lower + one batched upper pass of the 10 steps (the last is λ = 1, f(1)) +
    # one forward of the λ = 0 row without gradients (f(0))
    assert a.passes == dict(forward=4, backward=1, forward_rows=1 + 1 + 10 + 1, backward_rows=10)


# --- bad input -------------------------------------------------------------------------------

def test_rgba_and_grey_images_are_converted_with_a_warning(tiny, picture):
    for mode in ("RGBA", "L"):
        with pytest.warns(UserWarning, match=f"mode '{mode}' converted to RGB"):
            a = nibcore.explain(tiny, picture.convert(mode), "a red circle")
        assert a.scores.shape == (32, 32)


def test_integer_tensor_is_refused(tiny):
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        nibcore.explain(tiny, torch.zeros(3, 32, 32, dtype=torch.uint8), "a red circle")


def test_numpy_image_is_refused(tiny):
    with pytest.raises(TypeError, match="numpy array"):
        nibcore.explain(tiny, np.zeros((32, 32, 3), np.uint8), "a red circle")


def test_wrong_tensor_shape(tiny):
    with pytest.raises(ValueError, match=r"expects \(3, 32, 32\)"):
        nibcore.explain(tiny, torch.zeros(1, 32, 32), "a red circle")


def test_nan_pixels(tiny):
    x = torch.zeros(3, 32, 32)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nibcore.explain(tiny, x, "a red circle")


def test_tensor_input_equals_pil_input(tiny, picture):
    a = nibcore.explain(tiny, picture, "a red circle")
    b = nibcore.explain(tiny, tiny.preprocess(picture), "a red circle")
    assert np.array_equal(a.raw, b.raw)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text(tiny, picture, text):
    with pytest.raises(ValueError, match="empty text"):
        nibcore.explain(tiny, picture, text)


def test_text_longer_than_context(tiny, picture):
    with pytest.raises(ValueError, match="context holds 14"):
        nibcore.explain(tiny, picture, "a red circle " * 10)


@pytest.mark.parametrize("layer", [-1, 4, 100])
def test_layer_out_of_range(tiny, picture, layer):
    with pytest.raises(ValueError, match=f"layer {layer} is out of range.*4 blocks"):
        nibcore.explain(tiny, picture, "a red circle", layer=layer)


@pytest.mark.parametrize("steps", [0, -3])
def test_num_steps_below_one(tiny, picture, steps):
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        nibcore.explain(tiny, picture, "a red circle", num_steps=steps)


def test_unknown_schedule(tiny, picture):
    with pytest.raises(ValueError, match="unknown schedule 'trapez'"):
        nibcore.explain(tiny, picture, "a red circle", schedule="trapez")


def test_unknown_method(tiny, picture):
    with pytest.raises(ValueError, match="unknown method 'nibb'"):
        nibcore.explain(tiny, picture, "a red circle", method="nibb")


def test_unknown_parameter(tiny, picture):
    with pytest.raises(TypeError, match="unknown parameter.*'steps'"):
        nibcore.explain(tiny, picture, "a red circle", steps=3)


def test_unknown_side(tiny, picture):
    with pytest.raises(ValueError, match="unknown side 'left'"):
        nibcore.explain(tiny, picture, "a red circle", side="left")


def test_mismatched_numbers_of_images_and_texts(tiny, picture):
    with pytest.raises(ValueError, match="2 images but 3 texts"):
        nibcore.explain(tiny, [picture, picture], ["a", "b", "c"])


def test_registries():
    assert "nib" in nibcore.METHODS
    assert {"paper", "completeness"} <= set(nibcore.SCHEDULES)


def test_text_trim_is_exact(tiny, picture):
    """NIB cuts the padding after EOT; the full-context computation gives the same raw scores."""
    from nibcore.methods.nib import scaled_path
    from nibcore.schedules import paper

    a = nibcore.explain(tiny, picture, "a red circle", side="text", layer=1)
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])  # full context, 16 tokens
    with torch.no_grad():
        target = tiny.encode_image(pixels)
        z = tiny.text.lower(ids, 1)
    lambdas, weights = paper(10)
    grad_sum, _, _ = scaled_path(tiny.text, z, 1, ids, target, lambdas, weights, max_rows=64)
    full = (z * grad_sum).sum(-1)[0]
    assert torch.all(full[5:] == 0)  # padding gets exactly nothing
    assert_paths_close(a.raw, full[:5].numpy(), rtol=1e-4)


# --- the completeness schedule on a model whose LayerNorm biases are zero --------------------

def test_cosine_gradient_is_the_derivative_of_its_value_below_the_epsilon():
    """Euler: the cosine is degree-0 homogeneous in x while ‖x‖ > eps and degree 1 below, so
    x · ∂f/∂x is 0 above and f below (torch's own clamp is off the graph and breaks the second)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 16, generator=g)
    for scale, degree in ((1.0, 0), (1e-12, 1)):
        x = (scale * torch.randn(3, 16, generator=g)).requires_grad_(True)
        f = cosine(x, t)
        (grad,) = torch.autograd.grad(f.sum(), x)
        euler = (grad * x).sum(-1)
        torch.testing.assert_close(euler, degree * f.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(f, torch.nn.functional.cosine_similarity(x, t, dim=-1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("side", ["image", "text"])
def test_completeness_schedule_extends_its_range_on_zero_layernorm_biases(picture, seed, side):
    """open_clip's random initialisation (LayerNorm biases zero): f(λ) reaches f(0) only below
    10^-8, the range extends (more than 8 decades of nodes) and the gap closes to 1e-3."""
    from conftest import TINY_CFG

    torch.manual_seed(seed)
    model = nibcore.build_clip(TINY_CFG, name="tiny-zero-ln-bias")
    assert all(float(m.bias.abs().max()) == 0 for m in model.clip.modules()
               if isinstance(m, torch.nn.LayerNorm))
    a = nibcore.explain(model, picture, "a red circle and a cat", side=side,
                        schedule="completeness")
    assert a.extras["nodes"] > 8 * 10
    assert abs(a.f1 - a.f0) > 1e-2
    assert abs(a.completeness_gap) <= 1e-3 * abs(a.f1 - a.f0)
    fixed = nibcore.explain(model, picture, "a red circle and a cat", side=side)
    assert fixed.extras["nodes"] == 10  # the paper schedule is untouched
