"""The pooled-token floor: ``Tower.upper`` runs a tower's last block on the pooled token alone
(CLS, EOT; keys and values over every token) where that is exact, and the full block elsewhere.

The two are the same function; in float32 they are two numeric paths (products of other
shapes), so they are compared within :data:`nibcore.numerics.FLOAT_NOISE_RTOL`, not bit for bit.
Bits are compared only where the same computation runs twice (towers or methods that keep the
full block). ``Tower._pooled_last_block = False`` is the private switch back to the full block.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from noise import assert_paths_close
import nibcore
from nibcore.models import towers
from nibcore.base import default_layer
from nibcore.hf import HFImageTower, HFSiglipImageTower, HFSiglipTextTower, HFTextTower
from nibcore.models import AttentionRecorder, Tower

from conftest import TINY_CFG

TEXTS = ["a red circle", "two blue squares on green grass", "a cat"]


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini", device="cpu")


@pytest.fixture(scope="module")
def vitb32():
    """ViT-B/32 as open_clip builds it, random weights (no download)."""
    torch.manual_seed(0)
    return nibcore.load_model("ViT-B-32-quickgelu", device="cpu")


@pytest.fixture
def calls(monkeypatch):
    """The blocks :func:`nibcore.models.blocks.pooled_block` ran, in call order."""
    seen = []
    original = towers.pooled_block

    def spy(block, *args):
        seen.append(block)
        return original(block, *args)

    monkeypatch.setattr(towers, "pooled_block", spy)
    return seen


@pytest.fixture
def full_block(monkeypatch):
    """``full_block(*towers)``: the given towers run their last block whole (the switch off)."""
    def switch_off(*towers):
        for tower in towers:
            monkeypatch.setattr(tower, "_pooled_last_block", False)
    return switch_off


def inputs(model, n=3):
    rng = np.random.RandomState(7)
    size = model.image_size
    images = [Image.fromarray((rng.rand(*size, 3) * 255).astype("uint8")) for _ in range(n)]
    return nibcore.inputs.prepare_pairs(model, images, TEXTS[:n])


def upper_both_ways(tower, z, layer, ids):
    """The feature and ∂ Σ feature·w / ∂z through the floor and through the full block."""
    out = []
    for floor in (True, False):
        tower._pooled_last_block = floor
        try:
            zz = z.clone().requires_grad_(True)
            feature = tower.upper(zz, layer, ids)
            weights = torch.linspace(-1, 1, feature.shape[-1])
            (grad,) = torch.autograd.grad((feature * weights).sum(), zz)
        finally:
            del tower._pooled_last_block
        out.append((feature.detach(), grad))
    return out


@pytest.mark.parametrize("name", ["mini", "vitb32"])
@pytest.mark.parametrize("side", ["image", "text"])
def test_pooled_upper_is_the_full_upper_within_float_noise(request, calls, name, side):
    model = request.getfixturevalue(name)
    pixels, ids = inputs(model, 3 if name == "mini" else 2)
    tower = model.tower(side)
    # the text rows end at different positions: untrimmed (padding after every EOT) and trimmed
    for pool in ([None] if side == "image" else [ids, model.trim(ids)]):
        inp = pixels if side == "image" else pool
        # on ViT-B/32 NIB's layer only (from block 0 without gradients: see the next test)
        layers = {0, default_layer(tower), tower.n_blocks - 1} if name == "mini" else \
            {default_layer(tower)}
        for layer in sorted(layers):
            with torch.no_grad():
                z = tower.lower(inp, layer)
            (pooled, pooled_grad), (full, full_grad) = upper_both_ways(tower, z, layer, pool)
            assert_paths_close(pooled, full)
            assert_paths_close(pooled_grad, full_grad)
    assert calls and all(block is tower.blocks[-1] for block in calls)
    with torch.no_grad():  # the head alone (layer = n_blocks) has no block to pool
        del calls[:]
        x = tower.run_blocks(tower.enter(tower.embed(inp)), 0, tower.n_blocks)
        tower.upper(x, tower.n_blocks, pool)
    assert not calls


def test_whole_towers_match_open_clip_within_float_noise(vitb32, calls):
    pixels, ids = inputs(vitb32, 2)
    with torch.no_grad():
        assert_paths_close(vitb32.encode_image(pixels), vitb32.clip.encode_image(pixels))
        assert_paths_close(vitb32.encode_text(ids), vitb32.clip.encode_text(ids))
    assert len(calls) == 2


def _nib_both_ways(model, pixels, texts, full_block, **kw):
    """NIB ``side="both"`` through the floor, then through the full last block."""
    floor = nibcore.explain(model, pixels, texts, side="both", **kw)
    full_block(model.image, model.text)
    return floor, nibcore.explain(model, pixels, texts, side="both", **kw)


def _agree(a, b):
    assert_paths_close(a.raw, b.raw)
    assert_paths_close(a.scores, b.scores)
    assert_paths_close([a.f1, a.f0], [b.f1, b.f0])
    assert a.passes == b.passes and a.tokens == b.tokens


@pytest.mark.parametrize("kw", [{}, {"schedule": "completeness", "num_steps": 3},
                                {"rows_per_call": 7}])
def test_nib_through_the_floor_matches_the_full_block(mini, full_block, kw):
    pixels, ids = inputs(mini)
    floor, full = _nib_both_ways(mini, pixels, TEXTS, full_block, **kw)
    for side_floor, side_full in zip(floor, full):
        for a, b in zip(side_floor, side_full):
            _agree(a, b)


def test_nib_on_vitb32_matches_the_full_block(vitb32, full_block):
    pixels, _ = inputs(vitb32, 1)
    floor, full = _nib_both_ways(vitb32, pixels, TEXTS[1], full_block)
    for a, b in zip(floor, full):
        _agree(a, b)
        assert not np.array_equal(a.raw, b.raw)  # another numeric path, within its noise


@pytest.mark.parametrize("side", ["image", "text"])
def test_batched_equals_one_by_one_within_float_noise(mini, calls, side):
    pixels, _ = inputs(mini)
    batched = nibcore.explain(mini, pixels, TEXTS, side=side)
    assert calls
    for b, a in enumerate(batched):
        one = nibcore.explain(mini, pixels[b], TEXTS[b], side=side)
        assert_paths_close(a.raw, one.raw)
        assert_paths_close([a.f1, a.f0], [one.f1, one.f0])


@pytest.mark.parametrize("side", ["image", "text", "both"])
def test_pass_counts_are_the_same_as_with_the_full_block(mini, full_block, side):
    pixels, _ = inputs(mini, 2)
    runs = []
    for _ in range(2):  # through the floor, then the full block
        before = mini.passes.snapshot()
        out = nibcore.explain(mini, pixels, TEXTS[:2], side=side)
        runs.append((mini.passes.since(before),
                     [a.passes for a in (out[0] + out[1] if side == "both" else out)]))
        full_block(mini.image, mini.text)
    assert runs[0] == runs[1]


#: Which methods run the explained tower's last block on the pooled token alone. Those that
#: record the last block's attention for every token (its probabilities, queries and values, or
#: every token's output) run it whole; the others only ever read the feature.
FLOOR = {"nib": True, "m2ib": True, "gradcam": True, "mfaba": True, "rise": True,
         "chefer": False, "saliency": False, "fastig": False, "gradeclip": False,
         "legrad": False}
FAST = {"m2ib": {"num_steps": 2, "n_samples": 2}, "mfaba": {"num_steps": 2},
        "rise": {"n_masks": 8}, "nib": {"num_steps": 3}}


@pytest.mark.parametrize("method", sorted(FLOOR))
@pytest.mark.parametrize("side", ["image", "text"])
def test_which_methods_go_through_the_floor(mini, calls, full_block, method, side):
    if method == "legrad" and side == "text":
        pytest.skip("LeGrad defines no text side")
    pixels, _ = inputs(mini, 2)
    tower = mini.tower(side)
    a = nibcore.explain(mini, pixels, TEXTS[:2], method=method, side=side,
                        **FAST.get(method, {}))
    assert any(block is tower.blocks[-1] for block in calls) == FLOOR[method]
    full_block(tower)  # the explained tower whole; the other modality's feature still pooled
    b = nibcore.explain(mini, pixels, TEXTS[:2], method=method, side=side,
                        **FAST.get(method, {}))
    for x, y in zip(a, b):
        if FLOOR[method]:
            assert_paths_close(x.raw, y.raw)
        else:  # the same computation: the switch does not reach these methods
            assert np.array_equal(x.raw, y.raw)


def test_attention_recorder_and_hooks_keep_the_full_block(mini, calls, full_block):
    pixels, _ = inputs(mini, 2)
    tower = mini.image
    layer = default_layer(tower)
    with torch.no_grad():
        z = tower.lower(pixels, layer)
        recorder = AttentionRecorder(layers=[-1])
        recorded = tower.upper(z, layer, attention=recorder)
        seen = []
        handle = tower.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
        try:
            hooked = tower.upper(z, layer)
        finally:
            handle.remove()
        assert not calls
        assert recorder.parts[-1]["out"].shape == z.shape and seen == [z.shape]
        assert tower.upper(z, layer) is not None and len(calls) == 1  # hook gone: the floor
        full_block(tower)
        full = tower.upper(z, layer)
    assert torch.equal(hooked, full)  # the same computation: block(x)
    assert_paths_close(recorded, full)  # the block with its attention written out


def test_towers_that_keep_the_full_block(calls):
    """An average-pooled ViT reads every token of the last block: no floor, the same bits."""
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "pool_type": "avg"}}
    torch.manual_seed(0)
    avg = nibcore.build_clip(cfg, name="tiny-avg")
    pixels = torch.randn(2, 3, *avg.image_size)
    with torch.no_grad():
        feature = avg.encode_image(pixels)
        assert avg.image.pooled_query(None, 2) is None
        avg.image._pooled_last_block = False
        assert torch.equal(feature, avg.encode_image(pixels))
    assert not calls
    # Hugging Face towers run their layers their own way: never the floor
    for cls in (HFImageTower, HFTextTower, HFSiglipImageTower, HFSiglipTextTower):
        assert cls.pooled_query is Tower.pooled_query


def test_siglip_attention_pool_keeps_the_full_block_and_its_text_tower_pools(calls):
    pytest.importorskip("timm")
    from test_siglip import make_tiny_siglip

    siglip = make_tiny_siglip()
    pixels = torch.randn(1, 3, *siglip.image_size)
    ids = siglip.tokenize(["a red circle"])
    assert siglip.image.pooled_query(None, 1) is None  # the MAP head reads every token
    assert torch.equal(siglip.text.pooled_query(ids, 1), torch.tensor([ids.shape[1] - 1]))
    with torch.no_grad():
        assert_paths_close(siglip.encode_image(pixels), siglip.clip.encode_image(pixels))
        assert_paths_close(siglip.encode_text(ids), siglip.clip.encode_text(ids))
    assert calls == [siglip.text.blocks[-1]]


def test_hugging_face_clip_keeps_the_full_block(calls):
    transformers = pytest.importorskip("transformers")
    from test_hf import hf_config

    hf = nibcore.load_model(transformers.CLIPModel(hf_config()).eval(), device="cpu")
    ids = hf.tokenize(["a red circle"])
    assert hf.image.pooled_query(None, 1) is None and hf.text.pooled_query(ids, 1) is None
    with torch.no_grad():
        hf.encode_image(torch.randn(1, 3, *hf.image_size))
        hf.encode_text(ids)
    assert not calls
