"""The bundled mini CLIP loads offline, matches its recorded hash, and recognises scenes."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nibcore.world import scenes
from nibcore.world.quality import occlusion, zero_shot
from nibcore.models import load_bundled
from nibcore.world.train import to_tensor

DATA = Path(__file__).resolve().parents[1] / "data"
# Measured on the shipped model (MINI_CLIP_CARD.md): both 1.0 on these scenes;
# chance is 1/30 and 1/2.
ZERO_SHOT_FLOOR = 0.8
OCCLUSION_FLOOR = 0.8


@pytest.fixture(scope="module")
def mini():
    m = load_bundled("mini", DATA)
    return m.clip, m.preprocess, m.tokenizer, None


def test_checkpoint_hash_matches_json_and_card():
    cfg = json.loads((DATA / "mini-clip.json").read_text())
    sha = hashlib.sha256((DATA / "mini-clip.safetensors").read_bytes()).hexdigest()
    assert cfg["sha256"] == sha
    assert sha in (DATA / "MINI_CLIP_CARD.md").read_text()
    assert (DATA / "mini-clip.safetensors").stat().st_size <= 25 * 2**20
    assert cfg["image_size"] == scenes.IMAGE_SIZE and cfg["threads"] == 1


def test_preprocess_matches_training_transform(mini):
    _, preprocess, _, _ = mini
    s = scenes.sample(3)
    assert torch.equal(preprocess(s.image), to_tensor(np.array(s.image)[None])[0])


def test_zero_shot_above_floor(mini):
    model, preprocess, tokenizer, _ = mini
    torch.set_num_threads(1)
    report = zero_shot(model, preprocess, tokenizer, scenes.heldout(60, n_objects=1))
    assert report["zero_shot_top1"] >= ZERO_SHOT_FLOOR


def test_occlusion_grounding_above_floor(mini):
    model, preprocess, tokenizer, _ = mini
    torch.set_num_threads(1)
    assert (
        occlusion(model, preprocess, tokenizer, scenes.heldout(30, n_objects=2)) >= OCCLUSION_FLOOR
    )


def test_load_model_mini_needs_no_network(monkeypatch):
    import socket

    import nibcore

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = nibcore.load_model("mini", device="cpu")
    assert model.name == "mini" and model.grid == (8, 8) and model.image_size == (64, 64)
    s = scenes.sample(11, n_objects=1)
    a = nibcore.explain(model, s.image, s.caption, side="image")
    assert a.scores.shape == (64, 64)


def test_bundled_names_and_the_files_each_world_exports():
    from nibcore.models import BUNDLED
    from nibcore.world.train import STEMS, WORLDS

    assert set(STEMS) == set(WORLDS) and set(STEMS.values()) == set(BUNDLED.values())
    with pytest.raises(ValueError, match="unknown bundled model 'maxi'"):
        load_bundled("maxi")
