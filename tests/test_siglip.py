"""SigLIP towers: open_clip's CustomTextCLIP with a timm ViT image tower (no CLS, attention-pool
(MAP) head) and open_clip's text transformer (no causal mask, pooled at the last position).

Random weights, no download: a tiny config of the ViT-B-16-SigLIP architecture (the timm trunk
built small). SigLIP's own tokenizer is a SentencePiece model fetched from the Hugging Face hub,
so these tests pair the architecture with the offline CLIP BPE tokenizer (text vocabulary sized
to it); with network access open_clip's real tokenizer loads as usual.
"""

import math
from unittest import mock

import numpy as np
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F

from noise import assert_paths_close
import nibcore
from nibcore.models import AttentionRecorder, TimmImageTower

SIGLIP_CFG = dict(
    embed_dim=32, init_logit_bias=-10,
    vision_cfg=dict(image_size=32, timm_model_name="vit_base_patch16_siglip_224",
                    timm_model_pretrained=False, timm_pool="map", timm_proj="none"),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=3,
                  no_causal_mask=True, proj_bias=True, pool_type="last",
                  norm_kwargs=dict(eps=1e-6)))
SMALL_TRUNK = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)


def make_tiny_siglip(seed: int = 0) -> nibcore.ClipModel:
    """ViT-B-16-SigLIP's architecture at toy size (4x4 patch grid, 4 image and 3 text blocks)."""
    create = timm.create_model
    torch.manual_seed(seed)
    with mock.patch.object(open_clip.timm_model.timm, "create_model",
                           lambda name, **kw: create(name, **kw, **SMALL_TRUNK)):
        clip = open_clip.model.CustomTextCLIP(**SIGLIP_CFG)
    with torch.no_grad():  # trained-looking norms (random gains and biases)
        for module in clip.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.normal_(0.0, 0.1)
                module.weight.normal_(1.0, 0.1)
    preprocess = open_clip.transform.image_transform(32, is_train=False, mean=(0.5,) * 3,
                                                     std=(0.5,) * 3)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    return nibcore.ClipModel(clip, preprocess, tokenizer, "tiny-siglip", (0.5,) * 3, (0.5,) * 3)


@pytest.fixture(scope="module")
def siglip():
    return make_tiny_siglip()


@pytest.fixture(scope="module")
def pair(siglip, picture):
    return siglip.preprocess(picture)[None], siglip.tokenize(["a red circle"])


def test_towers_and_geometry(siglip):
    assert isinstance(siglip.image, TimmImageTower)
    assert siglip.image.prefix_tokens == 0 and siglip.grid == (4, 4)
    assert siglip.image_size == (32, 32) and siglip.image.n_blocks == 4
    assert siglip.text.n_blocks == 3 and siglip.text.attn_mask is None
    assert siglip.text.pool_type == "last"


def test_split_matches_open_clip_forward(siglip, pair):
    pixels, ids = pair
    with torch.no_grad():
        image = siglip.clip.encode_image(pixels)
        text = siglip.clip.encode_text(ids)
        assert_paths_close(siglip.encode_image(pixels), image)
        assert_paths_close(siglip.encode_text(ids), text)
        for layer in range(siglip.image.n_blocks):
            z = siglip.image.lower(pixels, layer)
            assert z.shape == (1, 16, 32)  # every token is a patch: no CLS
            assert_paths_close(siglip.image.upper(z, layer), image)
        for layer in range(siglip.text.n_blocks):
            z = siglip.text.lower(ids, layer)
            assert_paths_close(siglip.text.upper(z, layer, ids), text)


def test_explicit_attention_is_the_same_function(siglip, pair):
    pixels, ids = pair
    with torch.no_grad():
        rec = AttentionRecorder(layers=range(4), head=True)
        out = siglip.image.from_embedding(siglip.image.embed(pixels), attention=rec)
        torch.testing.assert_close(out, siglip.clip.encode_image(pixels), rtol=0, atol=1e-5)
        assert len(rec.probs) == 4 and rec.probs[0].shape == (1, 2, 16, 16)
        assert rec.head_probs.shape == (1, 2, 1, 16)  # one latent query over the 16 patches
        torch.testing.assert_close(rec.head_probs.sum(-1), torch.ones(1, 2, 1))
        rec = AttentionRecorder(layers=[-1])
        out = siglip.text.from_embedding(siglip.text.embed(ids), ids, attention=rec)
        torch.testing.assert_close(out, siglip.clip.encode_text(ids), rtol=0, atol=1e-5)


def test_nib_image_map_uses_every_patch_token(siglip, picture):
    a = nibcore.explain(siglip, picture, "a red circle")
    assert a.raw.shape == (16,) and a.scores.shape == (32, 32)
    grid = torch.from_numpy(a.raw).reshape(1, 1, 4, 4)
    up = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    expected = (up - up.min()) / (up.max() - up.min())
    assert_paths_close(a.scores, expected.numpy())
    assert a.f1 is not None and math.isfinite(a.completeness_gap)


def test_nib_text_side(siglip, picture):
    t = nibcore.explain(siglip, picture, "a red circle", side="text")
    assert len(t.raw) == len(t.tokens) == 5 and np.isfinite(t.raw).all()


RUNS = {"nib", "gradcam", "m2ib", "rise", "mfaba"}  # run on both sides
REFUSED = {  # (method, side) -> message
    ("chefer", "image"): "pools with an attention head",
    ("saliency", "image"): "pools with an attention head",
    ("fastig", "image"): "pools with an attention head",
    ("gradeclip", "image"): "pools with an attention head",
    ("chefer", "text"): "pools the last\\s+position",
    ("saliency", "text"): "pools the last\\s+position",
    ("fastig", "text"): "pools the last\\s+position",
    ("legrad", "text"): "legrad explains the image side only",
}
FAST = {"rise": dict(num_masks=64), "m2ib": dict(num_steps=2)}


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("method", sorted(nibcore.METHODS))
def test_every_method_runs_or_says_why(siglip, picture, method, side):
    params = {k: v for k, v in FAST.get(method, {}).items()
              if k in nibcore.METHODS[method].defaults}
    if (method, side) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[method, side]) as err:
            nibcore.explain(siglip, picture, "a red circle", method=method, side=side, **params)
        assert "\n" not in str(err.value)
        return
    a = nibcore.explain(siglip, picture, "a red circle", method=method, side=side, **params)
    assert np.isfinite(a.raw).all() and np.isfinite(a.scores).all()
    if method in RUNS or method == "legrad":
        assert a.scores.max() > 0
    if method in ("gradeclip", "legrad", "gradcam"):
        assert a.raw.min() >= 0  # ReLU'd maps (Grad-ECLIP's may be 0 on every real token here)


def test_legrad_formula_on_the_attention_pool(siglip, pair, picture):
    """LeGrad's SigLIP variant, recomputed: per block l, the model's head (final norm, MAP head,
    identity projection) on block l's output; ∂cos/∂(MAP attention), ReLU, mean over heads."""
    pixels, ids = pair
    trunk = siglip.clip.visual.trunk
    pool = trunk.attn_pool
    text = siglip.clip.encode_text(ids)
    x = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels)))
    total = 0
    for l, block in enumerate(trunk.blocks):
        x = block(x)
        if l < 2:
            continue
        h = trunk.norm(x)
        b, n, c = h.shape
        heads, hd = pool.num_heads, pool.head_dim
        q = pool.q(pool.latent).reshape(1, 1, heads, hd).transpose(1, 2)
        k, v = pool.kv(h).reshape(b, n, 2, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        probs = (q @ k.transpose(-1, -2) / math.sqrt(hd)).softmax(-1).detach().requires_grad_()
        o = pool.proj((probs @ v).transpose(1, 2).reshape(b, 1, c))
        feature = (o + pool.mlp(pool.norm(o)))[:, 0]
        (g,) = torch.autograd.grad(F.cosine_similarity(feature, text).sum(), probs)
        total = total + g.clamp(min=0).mean(dim=(1, 2))[0]
    a = nibcore.explain(siglip, picture, "a red circle", method="legrad")
    assert a.passes == dict(forward=2, backward=1, forward_rows=2, backward_rows=1)
    np.testing.assert_allclose(a.raw, total.numpy(), rtol=1e-4, atol=1e-8)


def test_gradeclip_text_uses_the_pooled_last_position(siglip, picture):
    a = nibcore.explain(siglip, picture, "a red circle", method="gradeclip", side="text")
    b = nibcore.explain(siglip, picture, "a red circle", method="gradeclip", side="text")
    assert np.array_equal(a.raw, b.raw) and a.raw.min() >= 0
    assert a.passes == dict(forward=2, backward=1, forward_rows=2, backward_rows=1)


# --- end-of-text from the tokenizer -----------------------------------------------------------

class SentencePieceLike:
    """A stand-in for SigLIP's SentencePiece tokenizer as open_clip's ``HFTokenizer`` wraps it: no
    start token, end-of-text id 1, padded with the same id 1, words mapped to ids >= 2 (so the
    largest id is a word, not EOT)."""

    eos_token_id = pad_token_id = 1

    def __init__(self, context_length: int = 16):
        self.context_length = context_length
        self.vocab = {"a": 900, "red": 40, "circle": 7, "blue": 300, "square": 12}

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(w, 2) for w in text.split()]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.context_length), 1, dtype=torch.long)
        for i, text in enumerate(texts):
            row = (self.encode(text) + [1])[: self.context_length]
            out[i, : len(row)] = torch.tensor(row)
        return out


@pytest.fixture(scope="module")
def siglip_sp(siglip):
    return nibcore.ClipModel(siglip.clip, siglip.preprocess, SentencePieceLike(), "tiny-siglip-sp",
                             siglip.mean, siglip.std)


def test_eot_comes_from_the_tokenizer(siglip_sp):
    assert siglip_sp.eot_id == 1 and siglip_sp.pad_id == 1
    ids = siglip_sp.tokenize(["a red circle", "blue square", "a"])
    assert siglip_sp.text_length(ids).tolist() == [4, 3, 2]  # words + EOT, no SOT
    assert (ids.argmax(-1) + 1).tolist() == [1, 1, 1]  # the largest-id rule would say 1
    assert siglip_sp.token_strings(ids[0]) == ["900", "40", "7", "1"]
    full = siglip_sp.tokenizer([" ".join(["red"] * 20)])  # truncated: no EOT written
    assert siglip_sp.text_length(full).tolist() == [16]


def test_text_maps_cover_the_words_and_eot(siglip_sp, picture):
    for method in ("nib", "gradcam", "gradeclip"):
        t = nibcore.explain(siglip_sp, picture, "a red circle", method=method, side="text")
        assert len(t.raw) == len(t.tokens) == 4 and np.isfinite(t.raw).all()


def test_explicit_eot_id_for_a_tokenizer_that_names_none(siglip):
    class Bare(SentencePieceLike):
        eos_token_id = pad_token_id = None

    model = nibcore.ClipModel(siglip.clip, siglip.preprocess, Bare(), eot_id=1)
    assert model.eot_id == 1
    assert model.text_length(model.tokenize(["a red circle"])).tolist() == [4]


def test_clip_text_length_is_unchanged(tiny):
    """CLIP's BPE: EOT (49407) is the largest id, padding 0: the same lengths as before."""
    assert tiny.eot_id == 49407 and tiny.pad_id == 0
    ids = tiny.tokenize(["a red circle", "x", "a photo of a big blue square on the grass today"])
    assert tiny.text_length(ids).tolist() == (ids.argmax(-1) + 1).tolist()
    long = tiny.tokenizer([" ".join(["red"] * 30)])  # truncated by open_clip, EOT kept last
    assert tiny.text_length(long).tolist() == (long.argmax(-1) + 1).tolist() == [16]
    assert nibcore.models.text_lengths(ids).tolist() == tiny.text_length(ids).tolist()


# --- Grad-CAM's classic variant without CLS ---------------------------------------------------

@pytest.mark.parametrize("layer", [1, 2])
def test_gradcam_classic_averages_every_patch_token(siglip, pair, picture, layer):
    """No CLS: w_c = mean over all 16 tokens of ∂logit/∂z_ic (position 0 is a patch), recomputed
    with hooks on the timm block's input."""
    pixels, ids = pair
    block = siglip.clip.visual.trunk.blocks[layer]
    with torch.no_grad():
        text = siglip.clip.encode_text(ids)
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a: seen.setdefault("z", a[0].detach()))
    with torch.no_grad():
        siglip.clip.encode_image(pixels)
    handle.remove()
    leaf = seen["z"].clone().requires_grad_(True)
    handle = block.register_forward_pre_hook(lambda m, a: (leaf,))
    value = siglip.clip.logit_scale.exp() * F.cosine_similarity(siglip.clip.encode_image(pixels),
                                                                text)
    handle.remove()
    (g,) = torch.autograd.grad(value.sum(), leaf)
    expected = (g.mean(1)[:, None] * seen["z"]).sum(-1).clamp(min=0)[0]
    dropped_first = (g[:, 1:].mean(1)[:, None] * seen["z"]).sum(-1).clamp(min=0)[0]
    assert not torch.allclose(expected, dropped_first, atol=1e-6)  # the test can tell them apart
    a = nibcore.explain(siglip, picture, "a red circle", method="gradcam", variant="classic",
                        layer=layer)
    assert a.raw.shape == (16,)
    assert_paths_close(a.raw, expected.numpy(), rtol=1e-4)
