"""Captum as an independent oracle: NIB with the paper schedule is integrated gradients on the
state entering the bottleneck block, zero baseline, right Riemann sum with the same n."""

import numpy as np
import pytest
import torch
from PIL import Image

from noise import assert_paths_close
import nibcore
from nibcore.base import cosine, default_layer
from nibcore.inputs import prepare_pairs

captum_attr = pytest.importorskip("captum.attr")

TEXTS = ["a red circle", "two blue squares on green grass"]


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("num_steps", [10, 3])
def test_paper_schedule_equals_captum_integrated_gradients(tiny, side, num_steps):
    rng = np.random.RandomState(11)
    images = [Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8")) for _ in TEXTS]
    pixels, ids = prepare_pairs(tiny, images, TEXTS)
    ours = nibcore.explain(tiny, pixels, TEXTS, side=side, num_steps=num_steps)

    tower = tiny.tower(side)
    layer = default_layer(tower)
    with torch.no_grad():
        if side == "image":
            target, z = tiny.encode_text(ids), tower.lower(pixels, layer)
        else:
            target, z = tiny.encode_image(pixels), tower.lower(ids, layer)

    def split_model(state, token_ids, target):
        return cosine(tower.upper(state, layer, None if side == "image" else token_ids), target)

    ig = captum_attr.IntegratedGradients(split_model)
    theirs = ig.attribute(z, baselines=torch.zeros_like(z), n_steps=num_steps,
                          method="riemann_right", additional_forward_args=(ids, target))
    theirs = theirs.sum(-1).detach().numpy()
    for b, a in enumerate(ours):
        expected = theirs[b, : a.raw.shape[0]]
        assert np.abs(expected).max() > 1e-4  # not a comparison of zeros
        assert_paths_close(a.raw, expected)
