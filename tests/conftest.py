"""Shared fixtures: a tiny randomly-initialised open_clip CLIP (fast on one CPU core)."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import nibcore

TINY_CFG = dict(embed_dim=32,
                vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=4, head_width=16),
                text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=4))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread: the tiny models gain nothing from two, and on a busy 2-core machine
    two threads can make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny(seed: int = 0, cfg: dict = TINY_CFG) -> nibcore.ClipModel:
    """A tiny random CLIP; LayerNorm biases and gains are randomised like a trained model's."""
    torch.manual_seed(seed)
    model = nibcore.build_clip(cfg, name="tiny")
    with torch.no_grad():
        for module in model.clip.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.normal_(0.0, 0.1)
                module.weight.normal_(1.0, 0.1)
    return model


@pytest.fixture(scope="session")
def tiny():
    return make_tiny()


@pytest.fixture(scope="session")
def picture():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(40, 48, 3) * 255).astype("uint8"))


@pytest.fixture(scope="session")
def tiny_registered(tmp_path_factory):
    """The tiny config registered with open_clip as model 'nib-tiny', plus a saved checkpoint."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / "nib-tiny.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    model = make_tiny(seed=1)
    path = folder / "nib-tiny.pt"
    torch.save(model.clip.state_dict(), path)
    return model, path
