"""Grad-ECLIP: its defining formula recomputed independently on the tiny model, counted passes,
determinism, parameter checks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nibcore
from nibcore.methods.gradeclip import default_gradeclip_layer


def _grad_at_attention_output(blocks, x, layer, mask, finish):
    """Run ``blocks`` on ``x`` with open_clip's own modules; at block ``layer`` make the state
    after the attention sub-layer a leaf. Returns (q, k, v of that block, ∂objective/∂o) with
    ``o`` the attention output before the output projection (by the chain rule through
    ``out_proj``)."""
    for block in blocks[:layer]:
        x = block(x, attn_mask=mask)
    block = blocks[layer]
    h = block.ln_1(x)
    q, k, v = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    mid = (x + block.ls_1(block.attention(h, attn_mask=mask))).detach().requires_grad_(True)
    y = mid + block.ls_2(block.mlp(block.ln_2(mid)))
    for b in blocks[layer + 1:]:
        y = b(y, attn_mask=mask)
    (g_mid,) = torch.autograd.grad(finish(y).sum(), mid)
    return q, k, v, g_mid @ block.attn.out_proj.weight


def _expected(q, k, v, w, query, keys):
    """Σ_c w_c v_ic λ_i with λ = min-max over ``keys`` of cos(q_query, k_i) (0 elsewhere)."""
    cos = F.cosine_similarity(q[0, query][None], k[0], dim=-1)
    sel = cos[keys]
    lam = torch.zeros_like(cos)
    lam[keys] = (sel - sel.min()) / (sel.max() - sel.min())
    return (w[0, query] * v[0]).sum(-1) * lam


@pytest.mark.parametrize("layer", [None, 2])
def test_image_formula(tiny, picture, layer):
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])
    visual = tiny.clip.visual
    text = F.normalize(tiny.clip.encode_text(ids), dim=-1)
    blocks = list(visual.transformer.resblocks)

    def finish(y):
        return F.normalize(visual.ln_post(y[:, 0]) @ visual.proj, dim=-1) @ text[0]

    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x)
    start = len(blocks) - 1 if layer is None else layer
    total = 0
    keys = torch.arange(x.shape[1]) >= 1
    for l in range(start, len(blocks)):
        q, k, v, w = _grad_at_attention_output(blocks, x, l, None, finish)
        total = total + _expected(q, k, v, w, 0, keys)
    expected = total.clamp(min=0).detach().numpy()
    a = nibcore.explain(tiny, picture, "a red circle", method="gradeclip", layer=layer)
    assert a.extras["layer"] == start
    assert expected[0] == 0 and np.count_nonzero(expected) > 3
    np.testing.assert_allclose(a.raw, expected, rtol=1e-4, atol=1e-7)


def test_text_formula(tiny, picture):
    pixels = tiny.preprocess(picture)[None]
    caption = "a red circle on a blue square"
    ids = tiny.tokenize([caption])
    clip = tiny.clip
    image = F.normalize(clip.encode_image(pixels), dim=-1)
    eot = int(ids.argmax())
    blocks = list(clip.transformer.resblocks)

    def finish(y):
        return F.normalize(clip.ln_final(y)[:, eot] @ clip.text_projection, dim=-1) @ image[0]

    x = clip.token_embedding(ids) + clip.positional_embedding
    start = default_gradeclip_layer(tiny.text)
    assert start == len(blocks) - (2 * len(blocks)) // 3
    keys = torch.arange(ids.shape[1]) <= eot
    total = 0
    for l in range(start, len(blocks)):
        q, k, v, w = _grad_at_attention_output(blocks, x, l, clip.attn_mask, finish)
        total = total + _expected(q, k, v, w, eot, keys)
    expected = total.clamp(min=0).detach().numpy()[: eot + 1]
    a = nibcore.explain(tiny, picture, caption, method="gradeclip", side="text")
    assert len(a.raw) == eot + 1 and np.count_nonzero(expected) > 1
    np.testing.assert_allclose(a.raw, expected, rtol=1e-4, atol=1e-7)


def test_paper_defaults_scale_with_depth(tiny):
    assert default_gradeclip_layer(tiny.image) == tiny.image.n_blocks - 1
    twelve = type("T", (), {"side": "text", "n_blocks": 12})()
    assert default_gradeclip_layer(twelve) == 4  # the code's last 8 of 12 text blocks


@pytest.mark.parametrize("side", ["image", "text"])
def test_passes_counted(tiny, picture, side):
    out = nibcore.explain(tiny, [picture, picture], ["a red circle", "a blue square"],
                          method="gradeclip", side=side)
    assert out[0].passes == dict(forward=2, backward=1, forward_rows=4, backward_rows=2)


@pytest.mark.parametrize("side", ["image", "text"])
def test_deterministic(tiny, picture, side):
    a = nibcore.explain(tiny, picture, "a red circle", method="gradeclip", side=side)
    b = nibcore.explain(tiny, picture, "a red circle", method="gradeclip", side=side)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.scores, b.scores)
    assert a.raw.min() >= 0 and a.raw.max() > 0


def test_bad_parameters(tiny, picture):
    with pytest.raises(TypeError, match="layer must be None or an int"):
        nibcore.explain(tiny, picture, "a red circle", method="gradeclip", layer=1.5)
    with pytest.raises(ValueError, match="out of range"):
        nibcore.explain(tiny, picture, "a red circle", method="gradeclip", layer=99)
    with pytest.raises(TypeError, match="unknown parameter"):
        nibcore.explain(tiny, picture, "a red circle", method="gradeclip", steps=3)
    assert math.isfinite(nibcore.explain(tiny, picture, "a red circle", method="gradeclip",
                                         layer=0).raw.sum())


def test_an_average_pooled_image_tower_is_refused_in_one_line(picture):
    """open_clip's CLIPA configs average the patch tokens (``pool_type='avg'``): the CLS row
    Grad-ECLIP reads is not the pooled token; the text tower (pooled at EOT) is still explained."""
    from conftest import TINY_CFG, make_tiny

    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "pool_type": "avg"}}
    model = make_tiny(cfg=cfg)
    with pytest.raises(ValueError) as err:
        nibcore.explain(model, picture, "a dog", method="gradeclip")
    message = str(err.value)
    assert "\n" not in message and message.startswith("gradeclip cannot explain the image tower")
    assert "'tiny'" in message and "pool_type='avg'" in message and "CLS" in message
    text = nibcore.explain(model, picture, "a dog", method="gradeclip", side="text")
    assert np.isfinite(np.asarray(text.scores)).all()
