"""Hugging Face SiglipModel behind nibcore.load_model: a tiny random SigLIP saved to a temporary
folder with a small word-level tokenizer in SigLIP's conventions (end-of-text and padding id 1, no
start token), loaded offline. The cross-stack test converts the tiny open_clip SigLIP of
tests/test_siglip.py (timm ViT + MAP head, open_clip text tower) to transformers' SiglipModel and
checks that both stacks give the same maps. SigLIP's real SentencePiece tokenizer is a hub
download; this tokenizer only stands in for it."""

import numpy as np
import pytest
import torch

import nibcore

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from test_siglip import SIGLIP_CFG, SMALL_TRUNK, make_tiny_siglip  # noqa: E402

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "photo", "of", "the"]
TEXT = "a red circle"


def word_tokenizer():
    """A transformers tokenizer with SigLIP's special ids: 0 <pad>-like unused, 1 ``</s>`` (end
    of text and padding), 2 ``<unk>``; words from 3."""
    vocab = {"<unused>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>",
                                                pad_token="</s>", unk_token="<unk>")


def siglip_config():
    t, v = SIGLIP_CFG["text_cfg"], SMALL_TRUNK
    return transformers.SiglipConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"],
                         intermediate_size=4 * t["width"], num_hidden_layers=t["layers"],
                         num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"],
                         hidden_act="gelu", layer_norm_eps=1e-6,
                         projection_size=SIGLIP_CFG["embed_dim"]),
        vision_config=dict(hidden_size=v["embed_dim"], intermediate_size=4 * v["embed_dim"],
                           num_hidden_layers=v["depth"], num_attention_heads=v["num_heads"],
                           image_size=v["img_size"], patch_size=v["patch_size"],
                           hidden_act="gelu", layer_norm_eps=1e-6))


def _layers(prefix, blocks, timm):
    out = {}
    for i, b in enumerate(blocks):
        p = f"{prefix}.encoder.layers.{i}."
        if timm:
            w, bias, proj = b.attn.qkv.weight, b.attn.qkv.bias, b.attn.proj
            ln1, ln2, fc1, fc2 = b.norm1, b.norm2, b.mlp.fc1, b.mlp.fc2
        else:
            w, bias, proj = b.attn.in_proj_weight, b.attn.in_proj_bias, b.attn.out_proj
            ln1, ln2, fc1, fc2 = b.ln_1, b.ln_2, b.mlp.c_fc, b.mlp.c_proj
        for name, wi, bi in zip("qkv", w.chunk(3), bias.chunk(3)):
            out[p + f"self_attn.{name}_proj.weight"] = wi
            out[p + f"self_attn.{name}_proj.bias"] = bi
        for name, m in (("self_attn.out_proj", proj), ("layer_norm1", ln1), ("layer_norm2", ln2),
                        ("mlp.fc1", fc1), ("mlp.fc2", fc2)):
            out[p + name + ".weight"], out[p + name + ".bias"] = m.weight, m.bias
    return out


def to_hf(clip):
    """The open_clip SigLIP's weights as a transformers SiglipModel."""
    trunk, text = clip.visual.trunk, clip.text
    pool = trunk.attn_pool
    assert pool.pos_embed is None and len(clip.visual.head) == 0  # no projection
    state = {"logit_scale": clip.logit_scale.reshape(1), "logit_bias": clip.logit_bias.reshape(1),
             "vision_model.embeddings.patch_embedding.weight": trunk.patch_embed.proj.weight,
             "vision_model.embeddings.patch_embedding.bias": trunk.patch_embed.proj.bias,
             "vision_model.embeddings.position_embedding.weight": trunk.pos_embed[0],
             "vision_model.post_layernorm.weight": trunk.norm.weight,
             "vision_model.post_layernorm.bias": trunk.norm.bias,
             "vision_model.head.probe": pool.latent,
             "vision_model.head.attention.in_proj_weight": torch.cat([pool.q.weight,
                                                                      pool.kv.weight]),
             "vision_model.head.attention.in_proj_bias": torch.cat([pool.q.bias, pool.kv.bias]),
             "vision_model.head.attention.out_proj.weight": pool.proj.weight,
             "vision_model.head.attention.out_proj.bias": pool.proj.bias,
             "vision_model.head.layernorm.weight": pool.norm.weight,
             "vision_model.head.layernorm.bias": pool.norm.bias,
             "vision_model.head.mlp.fc1.weight": pool.mlp.fc1.weight,
             "vision_model.head.mlp.fc1.bias": pool.mlp.fc1.bias,
             "vision_model.head.mlp.fc2.weight": pool.mlp.fc2.weight,
             "vision_model.head.mlp.fc2.bias": pool.mlp.fc2.bias,
             "text_model.embeddings.token_embedding.weight": text.token_embedding.weight,
             "text_model.embeddings.position_embedding.weight": text.positional_embedding,
             "text_model.final_layer_norm.weight": text.ln_final.weight,
             "text_model.final_layer_norm.bias": text.ln_final.bias,
             "text_model.head.weight": text.text_projection.weight,
             "text_model.head.bias": text.text_projection.bias}
    state.update(_layers("vision_model", trunk.blocks, timm=True))
    state.update(_layers("text_model", text.transformer.resblocks, timm=False))
    model = transformers.SiglipModel(siglip_config()).eval()
    missing, unexpected = model.load_state_dict({k: t.detach().clone() for k, t in state.items()},
                                                strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """(open_clip SigLIP with the word tokenizer, the HF SigLIP loaded from its folder, folder)."""
    ours = make_tiny_siglip(seed=5)
    folder = tmp_path_factory.mktemp("hf-tiny-siglip")
    to_hf(ours.clip).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    hf = nibcore.load_model(str(folder), device="cpu")
    same = nibcore.ClipModel(ours.clip, hf.preprocess, hf.tokenizer, "tiny-siglip-words",
                             (0.5,) * 3, (0.5,) * 3)
    return same, hf, folder


def test_loads_offline_with_its_tokenizer(stacks):
    _, hf, folder = stacks
    assert isinstance(hf, nibcore.hf.HFSiglipModel) and hf.name == f"hf:{folder.name}"
    assert hf.grid == (4, 4) and hf.image_size == (32, 32) and hf.context_length == 16
    assert hf.image.prefix_tokens == 0 and hf.text.attn_mask is None
    ids = hf.tokenize([TEXT])
    assert ids[0, :4].tolist() == [3, 4, 7, 1] and (ids[0, 4:] == 1).all()  # no SOT, EOT = pad
    assert hf.eot_id == 1 and hf.text_length(ids).tolist() == [4]
    assert hf.token_strings(ids[0]) == ["a", "red", "circle", "</s>"]


def test_features_match_transformers_forward(stacks, picture):
    _, hf, _ = stacks
    pixels, ids = hf.preprocess(picture)[None], hf.tokenize([TEXT])
    with torch.no_grad():
        out = hf.clip(input_ids=ids, pixel_values=pixels)
        image = hf.encode_image(pixels)
        text = hf.encode_text(ids)
        torch.testing.assert_close(image, out.vision_model_output.pooler_output, rtol=0, atol=1e-5)
        torch.testing.assert_close(text, out.text_model_output.pooler_output, rtol=0, atol=1e-5)
        # the sigmoid logit: scaled cosine plus the bias, as transformers computes it
        logit = hf.clip.logit_scale.exp() * nibcore.base.cosine(image, text) \
            + hf.clip.logit_bias
        torch.testing.assert_close(logit, out.logits_per_image[:, 0], rtol=0, atol=1e-5)


def test_explicit_map_head_is_the_same_function(stacks, picture):
    _, hf, _ = stacks
    pixels = hf.preprocess(picture)[None]
    with torch.no_grad():
        rec = nibcore.models.AttentionRecorder(layers=[0, 3], head=True)
        out = hf.image.from_embedding(hf.image.embed(pixels), attention=rec)
        torch.testing.assert_close(out, hf.encode_image(pixels), rtol=0, atol=1e-5)
    assert rec.head_probs.shape == (1, 2, 1, 16) and len(rec.probs) == 2
    torch.testing.assert_close(rec.head_probs.sum(-1), torch.ones(1, 2, 1))


@pytest.mark.parametrize("method,side", [("nib", "image"), ("nib", "text"), ("legrad", "image"),
                                         ("gradcam", "image"), ("gradeclip", "text")])
def test_cross_stack_same_maps(stacks, picture, method, side):
    ours, hf, _ = stacks
    a = nibcore.explain(ours, picture, TEXT, method=method, side=side)
    b = nibcore.explain(hf, picture, TEXT, method=method, side=side)
    assert a.raw.shape == b.raw.shape and np.abs(a.raw).max() > 0
    np.testing.assert_allclose(b.raw, a.raw, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-5)
    assert a.passes == b.passes
    if side == "image":
        assert b.raw.shape == (16,)  # every patch token, no CLS
    else:
        assert len(b.tokens) == 4


@pytest.mark.parametrize("method", ["chefer", "saliency", "fastig", "gradeclip"])
def test_methods_that_need_a_cls_token_say_so(stacks, picture, method):
    _, hf, _ = stacks
    with pytest.raises(ValueError, match="pools with an attention head") as err:
        nibcore.explain(hf, picture, TEXT, method=method, side="image")
    assert "\n" not in str(err.value)


def test_refusals(stacks, tmp_path):
    _, hf, folder = stacks
    with pytest.raises(ValueError, match="needs its own tokenizer"):
        nibcore.load_model(hf.clip)
    again = nibcore.load_model(hf.clip, device="cpu", tokenizer=word_tokenizer())
    assert isinstance(again, nibcore.hf.HFSiglipModel) and again.eot_id == 1
    bare = tmp_path / "no-tokenizer"
    hf.clip.save_pretrained(bare)
    with pytest.raises(ValueError, match="needs its own tokenizer"):
        nibcore.load_model(str(bare))
    cfg = siglip_config()
    cfg.vision_config.vision_use_head = False
    with pytest.raises(TypeError, match="no attention-pool head"):
        nibcore.load_model(transformers.SiglipModel(cfg), tokenizer=word_tokenizer())
    with pytest.raises(TypeError, match="is not supported"):
        nibcore.load_model(transformers.SiglipVisionModel(cfg.vision_config))
    with pytest.raises(ValueError, match="tokenizer= is for Hugging Face"):
        nibcore.load_model("mini", tokenizer=word_tokenizer())
