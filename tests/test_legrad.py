"""LeGrad: its defining formula recomputed independently on the tiny model, counted passes,
determinism, the undefined text side."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nibcore


def _layer_relevance(tiny, pixels, text, layer):
    """mean_heads,queries ReLU(∂s_l/∂A_l) for block ``layer``: the attention of that block is a
    leaf; s_l = cos(proj(ln_post(mean of the block's output tokens)), text)."""
    visual = tiny.clip.visual
    blocks = visual.transformer.resblocks
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x)
    for block in blocks[:layer]:
        x = block(x)
    block = blocks[layer]
    mha = block.attn
    n, d, heads = x.shape[1], x.shape[2], mha.num_heads
    q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    split = [t.reshape(1, n, heads, d // heads).transpose(1, 2) for t in (q, k, v)]
    probs = (split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)).softmax(-1)
    probs = probs.detach().requires_grad_(True)
    o = (probs @ split[2]).transpose(1, 2).reshape(1, n, d)
    y = x + mha.out_proj(o)
    y = y + block.mlp(block.ln_2(y))
    feature = visual.ln_post(y.mean(dim=1)) @ visual.proj
    s = F.cosine_similarity(feature, text, dim=-1)
    (grad,) = torch.autograd.grad(s.sum(), probs)
    return grad.clamp(min=0).mean(dim=(1, 2))[0]


@pytest.mark.parametrize("layer", [None, 1])
def test_formula(tiny, picture, layer):
    pixels = tiny.preprocess(picture)[None]
    text = tiny.clip.encode_text(tiny.tokenize(["a red circle"]))
    n_blocks = tiny.image.n_blocks
    start = n_blocks - 2 if layer is None else layer
    expected = sum(_layer_relevance(tiny, pixels, text, l) for l in range(start, n_blocks))
    a = nibcore.explain(tiny, picture, "a red circle", method="legrad", layer=layer)
    assert a.extras["layer"] == start and a.extras["value"].shape == (n_blocks - start,)
    assert np.count_nonzero(expected.numpy()) > 3
    np.testing.assert_allclose(a.raw, expected.numpy(), rtol=1e-4, atol=1e-8)


def test_later_layers_do_not_leak_into_earlier_attention(tiny, picture):
    """Σ over layers of single-layer maps equals the multi-layer map: each layer's similarity
    reaches only its own attention."""
    both = nibcore.explain(tiny, picture, "a red circle", method="legrad", layer=2).raw
    last = nibcore.explain(tiny, picture, "a red circle", method="legrad", layer=3).raw
    expected_l2 = _layer_relevance(tiny, tiny.preprocess(picture)[None], tiny.clip.encode_text(
        tiny.tokenize(["a red circle"])), 2).numpy()
    np.testing.assert_allclose(both - last, expected_l2, rtol=1e-4, atol=1e-7)


def test_passes_counted(tiny, picture):
    out = nibcore.explain(tiny, [picture, picture], ["a red circle", "a blue square"],
                          method="legrad")
    assert out[0].passes == dict(forward=2, backward=1, forward_rows=4, backward_rows=2)


def test_deterministic(tiny, picture):
    a = nibcore.explain(tiny, picture, "a red circle", method="legrad")
    b = nibcore.explain(tiny, picture, "a red circle", method="legrad")
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.scores, b.scores)
    assert a.raw.min() >= 0 and a.raw.max() > 0


def test_text_side_is_not_defined(tiny, picture):
    with pytest.raises(ValueError, match="legrad explains the image side only"):
        nibcore.explain(tiny, picture, "a red circle", method="legrad", side="text")


def test_bad_layer(tiny, picture):
    with pytest.raises(ValueError, match="out of range"):
        nibcore.explain(tiny, picture, "a red circle", method="legrad", layer=4)
    with pytest.raises(ValueError, match="must be >= 0"):
        nibcore.explain(tiny, picture, "a red circle", method="legrad", layer=-1)


def test_an_average_pooled_tower_is_refused_in_one_line(picture):
    """open_clip's CLIPA configs average the patch tokens (``pool_type='avg'``): LeGrad's one
    mean token per layer would leave that head nothing to average (an all-zero map)."""
    from conftest import TINY_CFG, make_tiny

    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "pool_type": "avg"}}
    model = make_tiny(cfg=cfg)
    assert model.clip.visual.pool_type == "avg"
    with pytest.raises(ValueError) as err:
        nibcore.explain(model, picture, "a dog", method="legrad")
    message = str(err.value)
    assert "\n" not in message and message.startswith("legrad cannot explain the image tower")
    assert "'tiny'" in message and "pool_type='avg'" in message and "all zero" in message
