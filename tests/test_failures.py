"""The failures users hit first: grad modes around explain, bad checkpoints, offline weights."""

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_CFG, make_tiny

import nibcore
from nibcore.models import load_model

# --- explain under the caller's grad mode ------------------------------------------------------


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("method", ["nib", "saliency"])
def test_explain_inside_no_grad_matches_outside(tiny, picture, method, side):
    outside = nibcore.explain(tiny, picture, "a red circle", method=method, side=side)
    with torch.no_grad():
        inside = nibcore.explain(tiny, picture, "a red circle", method=method, side=side)
        assert not torch.is_grad_enabled(), "the caller's no_grad must be restored"
    assert np.array_equal(inside.raw, outside.raw)
    assert np.array_equal(inside.scores, outside.scores)
    assert inside.passes == outside.passes
    assert torch.is_grad_enabled()


def test_explain_inside_inference_mode_matches_outside(tiny, picture):
    outside = nibcore.explain(tiny, picture, "a red circle")
    with torch.inference_mode():
        inside = nibcore.explain(tiny, picture, "a red circle")
        assert torch.is_inference_mode_enabled(), "the caller's inference mode must be restored"
        pixels = nibcore.inputs.prepare_images(tiny, picture)  # an inference tensor
        from_tensor = nibcore.explain(tiny, pixels[0], "a red circle")
    assert np.array_equal(inside.raw, outside.raw)
    assert np.array_equal(from_tensor.raw, outside.raw)


def test_model_built_in_inference_mode_gets_a_one_line_error(picture):
    with torch.inference_mode():
        model = make_tiny(seed=3)
        with pytest.raises(RuntimeError, match="load the model outside inference mode") as err:
            nibcore.explain(model, picture, "a red circle")
    assert "\n" not in str(err.value)
