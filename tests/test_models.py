import pytest
import torch

import nibcore
from nibcore.models import AttentionRecorder

from conftest import TINY_CFG, make_tiny


def test_split_composes_to_the_full_tower(tiny, picture):
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])
    with torch.no_grad():
        ref_img = tiny.clip.encode_image(pixels)
        ref_txt = tiny.clip.encode_text(ids)
        for layer in range(tiny.image.n_blocks):
            z = tiny.image.lower(pixels, layer)
            assert z.shape == (1, 1 + 4 * 4, 64)
            torch.testing.assert_close(tiny.image.upper(z, layer), ref_img)
        for layer in range(tiny.text.n_blocks):
            z = tiny.text.lower(ids, layer)
            assert z.shape == (1, 16, 32)
            torch.testing.assert_close(tiny.text.upper(z, layer, ids), ref_txt)


def test_explicit_attention_matches_the_block(tiny, picture):
    pixels = tiny.preprocess(picture)[None]
    ids = tiny.tokenize(["a red circle"])
    with torch.no_grad():
        rec = AttentionRecorder(layers=[-1, 0])
        out = tiny.text.from_embedding(tiny.text.embed(ids), ids, attention=rec)
        torch.testing.assert_close(out, tiny.clip.encode_text(ids))
        assert [p.shape for p in rec.probs] == [(1, 2, 16, 16)] * 2
        torch.testing.assert_close(rec.probs[0].sum(-1), torch.ones(1, 2, 16))
        rec = AttentionRecorder(layers=[-1])
        tiny.image.from_embedding(tiny.image.embed(pixels), attention=rec)
        assert rec.probs[0].shape == (1, 4, 17, 17)


@pytest.mark.parametrize("size,patch,grid", [(224, 32, (7, 7)), (224, 16, (14, 14)),
                                              (48, 8, (6, 6))])
def test_grid_is_derived_from_the_model(size, patch, grid):
    cfg = dict(TINY_CFG, vision_cfg=dict(image_size=size, patch_size=patch, width=32, layers=1,
                                         head_width=16))
    model = make_tiny(cfg=cfg)
    assert model.grid == grid and model.image_size == (size, size)


def test_checkpoint_path_round_trip(tiny_registered, picture):
    saved, path = tiny_registered
    loaded = nibcore.load_model("nib-tiny", pretrained=str(path), device="cpu")
    pixels = saved.preprocess(picture)[None]
    ids = saved.tokenize(["a blue square"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels), saved.encode_image(pixels))
        torch.testing.assert_close(loaded.encode_text(ids), saved.encode_text(ids))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model name 'ViT-B-23'"):
        nibcore.load_model("ViT-B-23")


def test_unknown_pretrained_tag():
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        nibcore.load_model("ViT-B-32", pretrained="not-a-tag")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        nibcore.load_model("ViT-B-32", pretrained=str(tmp_path / "nope.pt"))


def test_network_tag_offline_says_what_to_do(monkeypatch):
    monkeypatch.setattr(nibcore.models.loading, "network_available", lambda *a, **k: False)
    hint = "pretrained='/path/to/weights.pt'.*load_model\\('mini'\\)"
    with pytest.raises(RuntimeError, match=hint):
        nibcore.load_model("ViT-B-32", pretrained="openai")


def test_mini_rejects_pretrained():
    with pytest.raises(ValueError, match="own weights"):
        nibcore.load_model("mini", pretrained="openai")


def test_pass_counter_counts_calls_rows_and_backward(tiny, picture):
    pixels = tiny.preprocess(picture)[None].repeat(3, 1, 1, 1)
    before = tiny.passes.snapshot()
    z = tiny.image.lower(pixels, 2).requires_grad_(True)
    tiny.image.upper(z, 2).sum().backward()
    assert tiny.passes.since(before) == dict(forward=2, backward=1, forward_rows=6,
                                             backward_rows=3)


def test_tokenizer_strings(tiny):
    ids = tiny.tokenize(["A red circle!"])
    assert tiny.token_strings(ids[0]) == ["<start_of_text>", "a", "red", "circle", "!",
                                          "<end_of_text>"]


def test_unsupported_architecture_is_refused():
    import open_clip

    resnet = open_clip.model.CLIP(**dict(TINY_CFG, vision_cfg=dict(
        image_size=32, layers=(1, 1, 1, 1), width=16, head_width=16)))
    with pytest.raises(TypeError, match="ModifiedResNet is not a ViT"):
        nibcore.ClipModel(resnet, preprocess=None, tokenizer=None)
    coca_like = open_clip.model.CLIP(**dict(TINY_CFG, vision_cfg=dict(
        TINY_CFG["vision_cfg"], attentional_pool=True, attn_pooler_queries=4, attn_pooler_heads=2)))
    with pytest.raises(TypeError, match="attentional pooler"):
        nibcore.ClipModel(coca_like, preprocess=None, tokenizer=None)
