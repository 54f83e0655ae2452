"""The paper's seven baselines behind nibcore.explain: defining properties, shapes, passes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from noise import assert_paths_close
import nibcore
from nibcore.base import logit, other_features

torch.set_num_threads(1)

BASELINES = ["m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig"]
TEXTS = ["a photo of a cat on a mat", "two dogs"]
# cheaper RISE for the tests that are not about RISE's defaults
FAST = {"rise": dict(n_masks=64, rows_per_call=64)}


def tiny_cfg(image_size: int = 32) -> dict:
    return dict(embed_dim=32,
                vision_cfg=dict(image_size=image_size, patch_size=8, width=64, layers=4,
                                head_width=16),
                text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=4))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nibcore.build_clip(tiny_cfg())


@pytest.fixture(scope="module")
def pixels(model):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *model.image_size, generator=g)


def test_all_registered():
    for name in BASELINES + ["nib"]:
        assert name in nibcore.METHODS


# --- shapes and ranges ------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("method", BASELINES)
def test_shapes_and_ranges(model, pixels, method, side):
    out = nibcore.explain(model, pixels, TEXTS, method=method, side=side, **FAST.get(method, {}))
    assert len(out) == 2
    lengths = model.text_length(model.tokenize(TEXTS)).tolist()
    for a, n in zip(out, lengths):
        assert a.method == method and a.side == side
        if side == "image":
            assert a.scores.shape == model.image_size
            pixel_level = method == "rise"
            assert a.raw.shape == (model.image_size if pixel_level
                                   else (1 + model.grid[0] * model.grid[1],))
        else:
            assert a.scores.shape == (n,) and a.raw.shape == (n,) and len(a.tokens) == n
        assert a.scores.min() >= 0 and a.scores.max() <= 1
        assert a.scores.max() == pytest.approx(1.0)  # not a degenerate constant map
        assert torch.isfinite(torch.from_numpy(a.raw)).all()


@pytest.mark.parametrize("method,variant", [("gradcam", "classic"), ("chefer", "rollout"),
                                            ("saliency", "pixels")])
@pytest.mark.parametrize("side", ["image", "text"])
def test_variants(model, pixels, method, variant, side):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method=method, side=side, variant=variant)
    n = len(a.tokens)
    if side == "image":
        assert a.scores.shape == model.image_size
        expected = model.image_size if variant == "pixels" else (1 + math.prod(model.grid),)
        assert a.raw.shape == expected
    else:
        assert a.scores.shape == (n,)
    assert (a.raw >= 0).all()
    assert 0 <= a.scores.min() and a.scores.max() <= 1


def test_non_square_free_grid():
    torch.manual_seed(0)
    model = nibcore.build_clip(tiny_cfg(image_size=48))  # patch 8 -> 6x6 grid
    assert model.grid == (6, 6)
    px = torch.randn(1, 3, 48, 48)
    for method in BASELINES:
        a = nibcore.explain(model, px, "a red car", method=method, side="image",
                            **FAST.get(method, {}))
        assert a.scores.shape == (48, 48)
        if method != "rise":
            assert a.raw.shape == (37,)


def test_works_under_no_grad(model, pixels):
    with torch.no_grad():
        for method in BASELINES:
            a = nibcore.explain(model, pixels[0], TEXTS[0], method=method,
                                **FAST.get(method, {}))
            assert a.scores.max() == pytest.approx(1.0)


# --- defining properties ----------------------------------------------------------------------

@pytest.mark.parametrize("side", ["image", "text"])
def test_m2ib_seeded(model, pixels, side):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", side=side, seed=3)
    b = nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", side=side, seed=3)
    c = nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", side=side, seed=4)
    assert (a.raw == b.raw).all() and (a.scores == b.scores).all()
    assert not (a.raw == c.raw).all()
    assert (a.raw >= 0).all()  # a sum of KL divergences


def test_m2ib_beta_zero_keeps_everything(model, pixels):
    """Without the capacity penalty the optimiser only raises λ: capacity can only grow."""
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", beta=0.0, num_steps=3)
    b = nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", beta=10.0, num_steps=3)
    assert a.raw.sum() > b.raw.sum()


@pytest.mark.parametrize("side", ["image", "text"])
def test_rise_all_ones_masks_constant(model, pixels, side):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="rise", side=side, p=1.0,
                        n_masks=16, rows_per_call=8)
    raw = torch.from_numpy(a.raw)
    assert torch.allclose(raw, raw.flatten()[0].expand_as(raw), rtol=1e-5)
    # the constant is the unmasked score (times the channel count on the text side)
    tower = model.tower(side)
    ids = model.tokenize([TEXTS[0]])
    with torch.no_grad():
        s = F.cosine_similarity(model.encode_image(pixels[:1]), model.encode_text(ids)).item()
    scale = 1 if side == "image" else tower.embed(ids).shape[-1]
    assert raw.flatten()[0].item() == pytest.approx(s * scale, rel=1e-4)
    assert (a.scores == 0).all()  # a constant map min-maxes to zeros


def test_rise_seeded(model, pixels):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="rise", n_masks=32, seed=1)
    b = nibcore.explain(model, pixels[0], TEXTS[0], method="rise", n_masks=32, seed=1,
                        rows_per_call=7)  # chunking does not change the result
    c = nibcore.explain(model, pixels[0], TEXTS[0], method="rise", n_masks=32, seed=2)
    assert_paths_close(a.raw, b.raw)
    assert not (a.raw == c.raw).all()


def test_rise_masks_geometry():
    from nibcore.methods.common import rise_grids, rise_masks

    g = torch.Generator().manual_seed(0)
    grids, shifts = rise_grids(500, 8, 0.5, g, torch.device("cpu"))
    masks = rise_masks(grids, shifts, (30, 45))
    assert masks.shape == (500, 30, 45)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("variant", ["paper", "classic"])
def test_gradcam_nonnegative(model, pixels, side, variant):
    for a in nibcore.explain(model, pixels, TEXTS, method="gradcam", side=side, variant=variant):
        assert (a.raw >= 0).all()


def manual_last_attention(model, pixels, ids, side):
    """Independent recomputation: the tower's last block written out by hand with the attention
    probabilities ``A`` as a leaf; returns (A, ∂logit/∂A)."""
    tower = model.tower(side)
    inputs = pixels if side == "image" else ids
    target = other_features(model, pixels, ids, side)
    with torch.no_grad():
        x = tower.enter(tower.embed(inputs))
        for block in tower.blocks[:-1]:
            x = block(x, attn_mask=tower.attn_mask)
        block = tower.blocks[-1]
        mha = block.attn
        b, n, d = x.shape
        heads, dh = mha.num_heads, d // mha.num_heads
        q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
        q, k, v = (t.reshape(b, n, heads, dh).transpose(1, 2) for t in (q, k, v))
        s = q @ k.transpose(-1, -2) / dh ** 0.5
        if tower.attn_mask is not None:
            s = s + tower.attn_mask
        attention = s.softmax(-1)
    attention.requires_grad_(True)
    y = x + mha.out_proj((attention @ v).transpose(1, 2).reshape(b, n, d))
    y = y + block.mlp(block.ln_2(y))
    value = logit(model, tower.head(y, None if side == "image" else ids), target)
    (grad,) = torch.autograd.grad(value.sum(), attention)
    return attention.detach(), grad


def query(x, ids, side):
    rows = torch.zeros(x.shape[0], dtype=torch.long) if side == "image" else ids.argmax(-1)
    return x[torch.arange(x.shape[0]), rows]


#: What each attention method's raw scores are, from the last block's attention A and ∂logit/∂A
#: (mean over heads, the pooling query's row).
ATTENTION_DEFINITIONS = {
    "saliency": lambda attention, grad: grad.abs().mean(1),                  # |∂logit/∂A|
    "fastig": lambda attention, grad: (grad * attention).mean(1),            # ∂logit/∂A ⊙ A
    "chefer": lambda attention, grad: (grad * attention).clamp(min=0).mean(1),  # last layer only
}


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("method", sorted(ATTENTION_DEFINITIONS))
def test_attention_methods_match_their_definition(model, pixels, side, method):
    ids = model.tokenize(TEXTS)
    attention, grad = manual_last_attention(model, pixels, ids, side)
    expected = query(ATTENTION_DEFINITIONS[method](attention, grad), ids, side)
    out = nibcore.explain(model, pixels, TEXTS, method=method, side=side)
    for b, a in enumerate(out):
        ref = expected[b, : len(a.raw)] if side == "text" else expected[b]
        assert_paths_close(a.raw, ref, rtol=1e-4)
    if method == "fastig":
        assert any((a.raw < 0).any() for a in out)  # signed


@pytest.mark.parametrize("side", ["image", "text"])
def test_mfaba_descends(model, pixels, side):
    out = nibcore.explain(model, pixels, TEXTS, method="mfaba", side=side)
    for a in out:
        path = a.extras["path"]
        assert path.shape == (10,)
        assert path[-1] < path[0]  # the signed-gradient steps lower the objective
        assert (a.raw >= 0).all()
        assert a.extras["objective"] == ("cosine" if side == "image" else "logit")


# --- passes -----------------------------------------------------------------------------------

# (forward, backward) per call for one pair with the default parameters, from the formulas:
# gradient baselines 1 (other modality) + their tower passes; M2IB 2 + num_steps / num_steps;
# MFABA 1 + num_steps / num_steps; RISE 1 + ceil(n_masks / rows_per_call) / 0.
EXPECTED = {
    ("gradcam", "image"): (3, 1), ("gradcam", "text"): (3, 1),
    ("chefer", "image"): (2, 1), ("chefer", "text"): (2, 1),
    ("saliency", "image"): (2, 1), ("saliency", "text"): (2, 1),
    ("fastig", "image"): (2, 1), ("fastig", "text"): (2, 1),
    ("mfaba", "image"): (1 + 10, 10), ("mfaba", "text"): (1 + 10, 10),
    ("m2ib", "image"): (2 + 10, 10), ("m2ib", "text"): (2 + 10, 10),
    ("rise", "image"): (1 + math.ceil(6000 / 100), 0), ("rise", "text"): (1 + 200 // 100, 0),
}


@pytest.mark.parametrize("method,side", sorted(EXPECTED))
def test_pass_counts_with_defaults(model, pixels, method, side):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method=method, side=side)
    assert (a.passes["forward"], a.passes["backward"]) == EXPECTED[method, side]


@pytest.mark.parametrize("method,params,expected", [
    ("m2ib", dict(num_steps=3), (2 + 3, 3)),
    ("mfaba", dict(num_steps=4), (1 + 4, 4)),
    ("rise", dict(n_masks=50, rows_per_call=7), (1 + math.ceil(50 / 7), 0)),
])
def test_pass_counts_follow_the_parameters(model, pixels, method, params, expected):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method=method, **params)
    assert (a.passes["forward"], a.passes["backward"]) == expected


def test_pass_counts_batched(model, pixels):
    # batches of pairs ride in the same calls
    for method in ["gradcam", "chefer", "mfaba", "m2ib"]:
        a = nibcore.explain(model, pixels, TEXTS, method=method)[0]
        assert (a.passes["forward"], a.passes["backward"]) == EXPECTED[method, "image"]
    # RISE: 1 + ceil(B * n_masks / rows_per_call)
    a = nibcore.explain(model, pixels, TEXTS, method="rise", n_masks=50, rows_per_call=30)[0]
    assert a.passes == dict(forward=1 + math.ceil(100 / 30), backward=0, forward_rows=102,
                            backward_rows=0)
    a = nibcore.explain(model, pixels, TEXTS, method="m2ib", num_steps=3, n_samples=4)[0]
    assert a.passes["forward"] == 5 and a.passes["backward_rows"] == 3 * 4 * 2


# --- layers and validation --------------------------------------------------------------------

def test_layer_defaults(model, pixels):
    from nibcore.methods.common import block_output_layer

    big = nibcore.build_clip(dict(embed_dim=16, vision_cfg=dict(image_size=16, patch_size=8,
                                                                 width=32, layers=12,
                                                                 head_width=16),
                                  text_cfg=dict(context_length=8, vocab_size=49408, width=16,
                                                heads=1, layers=12)))
    assert block_output_layer(big.image, None) == 10  # output of block 9 of 12
    assert block_output_layer(model.image, None) == 2  # 4 blocks: two kept above the split
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="gradcam", layer=1)
    assert a.extras["layer"] == 1
    with pytest.raises(ValueError, match="out of range"):
        nibcore.explain(model, pixels[0], TEXTS[0], method="m2ib", layer=4)


@pytest.mark.parametrize("method,params,error", [
    ("m2ib", dict(beta=-0.1), ValueError),
    ("m2ib", dict(lr=0), ValueError),
    ("m2ib", dict(num_steps=0), ValueError),
    ("m2ib", dict(n_samples=0), ValueError),
    ("m2ib", dict(seed=-1), ValueError),
    ("m2ib", dict(seed=1.5), TypeError),
    ("m2ib", dict(layer=-1), ValueError),
    ("m2ib", dict(layer="9"), TypeError),
    ("m2ib", dict(beta=float("nan")), ValueError),
    ("rise", dict(n_masks=0), ValueError),
    ("rise", dict(p=0), ValueError),
    ("rise", dict(p=1.5), ValueError),
    ("rise", dict(mask_grid=0), ValueError),
    ("rise", dict(rows_per_call=0), ValueError),
    ("rise", dict(n_masks=10.0), TypeError),
    ("gradcam", dict(variant="textbook"), ValueError),
    ("gradcam", dict(layer=True), TypeError),
    ("chefer", dict(variant="paper2"), ValueError),
    ("saliency", dict(variant="grad"), ValueError),
    ("mfaba", dict(num_steps=0), ValueError),
    ("mfaba", dict(step_size=0), ValueError),
    ("mfaba", dict(step_size="big"), TypeError),
    ("mfaba", dict(objective="softmax"), ValueError),
    ("fastig", dict(steps=3), TypeError),
    ("rise", dict(masks=3), TypeError),
])
def test_validation(model, pixels, method, params, error):
    with pytest.raises(error):
        nibcore.explain(model, pixels[0], TEXTS[0], method=method, **params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(pixels):
    torch.manual_seed(0)
    model = nibcore.build_clip(tiny_cfg()).to("cuda")
    for method in BASELINES:
        for side in ("image", "text"):
            a = nibcore.explain(model, pixels[0].cuda(), TEXTS[0], method=method, side=side,
                                **FAST.get(method, {}))
            assert a.scores.max() <= 1
    a = nibcore.explain(model, pixels[0].cuda(), TEXTS[0], method="m2ib", seed=2)
    b = nibcore.explain(model, pixels[0].cuda(), TEXTS[0], method="m2ib", seed=2)
    assert (a.raw == b.raw).all()


@pytest.mark.parametrize("method", ["gradcam", "chefer", "saliency", "fastig", "mfaba"])
def test_batch_equals_single(model, pixels, method):
    """Each text is explained against its own image: batching does not mix pairs."""
    batch = nibcore.explain(model, pixels, TEXTS, method=method, side="text")
    for b, a in enumerate(batch):
        one = nibcore.explain(model, pixels[b], TEXTS[b], method=method, side="text")
        assert_paths_close(a.raw, one.raw, rtol=1e-4)


def test_value_is_pair_logit(model, pixels):
    a = nibcore.explain(model, pixels[0], TEXTS[0], method="gradcam")
    with torch.no_grad():
        s = logit(model, model.encode_image(pixels[:1]), model.encode_text(
            model.tokenize(TEXTS[:1])))
    assert float(a.extras["value"]) == pytest.approx(float(s), rel=1e-4)
    assert a.f1 is None and a.completeness_gap is None


# --- the method style: typed signatures, one vocabulary, deprecated names -------------------

@pytest.mark.parametrize("name", sorted(nibcore.METHODS))
def test_method_signature_and_docstring(name):
    """Keyword-only typed parameters with defaults, each documented under ``Args:`` with the
    method's paper linked; ``defaults`` is the signature's."""
    import inspect

    cls = nibcore.METHODS[name]
    parameters = list(inspect.signature(cls).parameters.values())
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters)
    assert all(p.annotation is not p.empty for p in parameters)
    assert dict(cls.defaults) == {p.name: p.default for p in parameters}
    doc = inspect.getdoc(cls)
    assert "Args:" in doc and "https://" in doc
    args = doc[doc.index("Args:"):]
    for p in parameters:
        assert f"\n    {p.name}:" in args, f"{name}: {p.name} is not documented under Args:"
    # old vocabulary is gone from the signatures
    assert not {"steps", "max_rows", "batch_size", "grid"} & set(cls.defaults)


DEPRECATED = [
    ("m2ib", "steps", "num_steps", 2, {}),
    ("mfaba", "steps", "num_steps", 2, {}),
    ("rise", "grid", "mask_grid", 4, dict(n_masks=16)),
    ("rise", "batch_size", "rows_per_call", 5, dict(n_masks=16)),
    ("nib", "max_rows", "rows_per_call", 3, {}),
]


@pytest.mark.parametrize("method,old,new,value,extra", DEPRECATED)
def test_deprecated_names_still_work(model, pixels, method, old, new, value, extra):
    with pytest.warns(DeprecationWarning, match=f"'{old}' is renamed '{new}'"):
        a = nibcore.explain(model, pixels[0], TEXTS[0], method=method, **{old: value}, **extra)
    b = nibcore.explain(model, pixels[0], TEXTS[0], method=method, **{new: value}, **extra)
    assert a.params == b.params and a.params[new] == value and old not in a.params
    assert (a.raw == b.raw).all() and a.passes == b.passes
    with pytest.raises(TypeError, match=f"give '{new}' only"):
        nibcore.METHODS[method](**{old: value, new: value})


def test_positional_parameters_are_refused():
    with pytest.raises(TypeError, match="keyword arguments only"):
        nibcore.METHODS["m2ib"](0.1)
