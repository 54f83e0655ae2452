"""The CLIP chapter's SigLIP section: the random SigLIP architecture (small) and the table of
differences read off the models."""

import pytest

import nibcore
from nibcore.book import siglip as book_siglip
from nibcore.models import TimmImageTower


@pytest.fixture(scope="module")
def small():
    return book_siglip.random_siglip(small=True)


def test_small_siglip_architecture(small):
    assert isinstance(small.image, TimmImageTower) and small.image.prefix_tokens == 0
    assert small.grid == (8, 8) and small.image.n_blocks == 6 and small.text.n_blocks == 4
    assert small.text.attn_mask is None and small.text.pool_type == "last"
    assert small.clip.logit_bias is not None
    again = book_siglip.random_siglip(small=True)
    for (k, a), (_, b) in zip(small.clip.state_dict().items(), again.clip.state_dict().items()):
        assert (a == b).all(), k  # seeded


def test_nib_maps_every_patch_token(small, picture):
    a = nibcore.explain(small, picture, "a red circle")
    assert a.raw.shape == (64,) and a.scores.shape == (64, 64) and a.scores.max() == 1


def test_architecture_table(small):
    mini = nibcore.load_model("mini", device="cpu")
    table = book_siglip.architecture_table({"mini": mini, "siglip": small})
    assert table.loc["image tokens", "mini"] == "65 = 64 patches + 1 CLS"
    assert table.loc["image tokens", "siglip"] == "64 = 64 patches + 0 CLS"
    assert table.loc["image feature", "siglip"].startswith("attention pool")
    assert table.loc["text mask", "mini"] == "causal"
    assert "+ (-10)" in table.loc["logit", "siglip"] and "+" not in table.loc["logit", "mini"]


def test_not_a_siglip_config():
    with pytest.raises(ValueError, match="not an open_clip SigLIP config"):
        book_siglip.random_siglip("ViT-B-32")
