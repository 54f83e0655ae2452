"""Hugging Face CLIPModel behind nibcore.load_model: tiny random configs saved to a temporary
folder (no download), and the cross-stack test — an open_clip ViT and the same weights converted
to Hugging Face give the same maps. The ViT is the tiny random config of tests/conftest.py
(4 blocks, 4x4 patch grid): ViT-B/32 would cost minutes per test on this CPU."""

import numpy as np
import pytest
import torch

import nibcore

transformers = pytest.importorskip("transformers")

from conftest import TINY_CFG, make_tiny  # noqa: E402


def hf_config():
    v, t = TINY_CFG["vision_cfg"], TINY_CFG["text_cfg"]
    return transformers.CLIPConfig(
        projection_dim=TINY_CFG["embed_dim"],
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"],
                         intermediate_size=4 * t["width"], num_hidden_layers=t["layers"],
                         num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"],
                         hidden_act="gelu", layer_norm_eps=1e-5, eos_token_id=2),
        vision_config=dict(hidden_size=v["width"], intermediate_size=4 * v["width"],
                           num_hidden_layers=v["layers"], num_attention_heads=v["width"] // v[
                               "head_width"], image_size=v["image_size"],
                           patch_size=v["patch_size"], hidden_act="gelu", layer_norm_eps=1e-5))


def _blocks(prefix, resblocks):
    out = {}
    for i, b in enumerate(resblocks):
        q, k, v = b.attn.in_proj_weight.chunk(3)
        qb, kb, vb = b.attn.in_proj_bias.chunk(3)
        p = f"{prefix}.encoder.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb,
                    p + "self_attn.k_proj.weight": k, p + "self_attn.k_proj.bias": kb,
                    p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
                    p + "self_attn.out_proj.weight": b.attn.out_proj.weight,
                    p + "self_attn.out_proj.bias": b.attn.out_proj.bias,
                    p + "layer_norm1.weight": b.ln_1.weight, p + "layer_norm1.bias": b.ln_1.bias,
                    p + "layer_norm2.weight": b.ln_2.weight, p + "layer_norm2.bias": b.ln_2.bias,
                    p + "mlp.fc1.weight": b.mlp.c_fc.weight, p + "mlp.fc1.bias": b.mlp.c_fc.bias,
                    p + "mlp.fc2.weight": b.mlp.c_proj.weight,
                    p + "mlp.fc2.bias": b.mlp.c_proj.bias})
    return out


def to_hf(clip):
    """The open_clip CLIP's weights as a transformers CLIPModel."""
    v = clip.visual
    state = {"logit_scale": clip.logit_scale,
             "visual_projection.weight": v.proj.T, "text_projection.weight": clip.text_projection.T,
             "vision_model.embeddings.class_embedding": v.class_embedding,
             "vision_model.embeddings.patch_embedding.weight": v.conv1.weight,
             "vision_model.embeddings.position_embedding.weight": v.positional_embedding,
             "vision_model.pre_layrnorm.weight": v.ln_pre.weight,
             "vision_model.pre_layrnorm.bias": v.ln_pre.bias,
             "vision_model.post_layernorm.weight": v.ln_post.weight,
             "vision_model.post_layernorm.bias": v.ln_post.bias,
             "text_model.embeddings.token_embedding.weight": clip.token_embedding.weight,
             "text_model.embeddings.position_embedding.weight": clip.positional_embedding,
             "text_model.final_layer_norm.weight": clip.ln_final.weight,
             "text_model.final_layer_norm.bias": clip.ln_final.bias}
    state.update(_blocks("vision_model", v.transformer.resblocks))
    state.update(_blocks("text_model", clip.transformer.resblocks))
    model = transformers.CLIPModel(hf_config()).eval()
    missing, unexpected = model.load_state_dict({k: t.detach().clone() for k, t in state.items()},
                                                strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    ours = make_tiny(seed=3)
    folder = tmp_path_factory.mktemp("hf-tiny-clip")
    to_hf(ours.clip).save_pretrained(folder)
    return ours, nibcore.load_model(str(folder), device="cpu"), folder


def test_loads_offline_from_a_folder(stacks):
    ours, hf, folder = stacks
    assert isinstance(hf, nibcore.hf.HFClipModel) and hf.name == f"hf:{folder.name}"
    assert hf.grid == ours.grid and hf.image_size == ours.image_size
    assert hf.image.n_blocks == ours.image.n_blocks and hf.context_length == ours.context_length


def test_features_match_transformers_forward(stacks, picture):
    _, hf, _ = stacks
    pixels = hf.preprocess(picture)[None]
    ids = hf.tokenize(["a red circle"])
    with torch.no_grad():
        ref_image = hf.clip.get_image_features(pixel_values=pixels)
        ref_text = hf.clip.get_text_features(input_ids=ids)
        ref_image = getattr(ref_image, "pooler_output", ref_image)
        ref_text = getattr(ref_text, "pooler_output", ref_text)
        torch.testing.assert_close(hf.encode_image(pixels), ref_image, rtol=0, atol=1e-5)
        torch.testing.assert_close(hf.encode_text(ids), ref_text, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["nib", "gradeclip", "legrad", "chefer", "gradcam"])
@pytest.mark.parametrize("side", ["image", "text"])
def test_cross_stack_same_maps(stacks, picture, method, side):
    ours, hf, _ = stacks
    if method == "legrad" and side == "text":
        pytest.skip("LeGrad defines no text side")
    a = nibcore.explain(ours, picture, "a red circle", method=method, side=side)
    b = nibcore.explain(hf, picture, "a red circle", method=method, side=side)
    assert a.raw.shape == b.raw.shape and np.abs(a.raw).max() > 0
    np.testing.assert_allclose(b.raw, a.raw, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-5)
    assert a.passes == b.passes


def test_model_object_and_refusals(stacks, tmp_path):
    _, hf, _ = stacks
    again = nibcore.load_model(hf.clip, device="cpu")
    assert isinstance(again, nibcore.hf.HFClipModel)
    with pytest.raises(ValueError, match="carries its own weights"):
        nibcore.load_model(hf.clip, pretrained="openai")
    siglip = transformers.SiglipModel(transformers.SiglipConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=100),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=16, patch_size=8)))
    with pytest.raises(ValueError, match="SiglipModel needs its own tokenizer"):
        nibcore.load_model(siglip)  # supported (tests/test_hf_siglip.py), with its tokenizer
