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


# --- checkpoints ---------------------------------------------------------------------------


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("content", [b"not a checkpoint at all" * 40, b""])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_checkpoint_names_the_file_and_what_was_expected(tiny_registered, tmp_path,
                                                                 content, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_model("nib-tiny", str(path), device="cpu")
    text = _one_line(err)
    assert str(path) in text and "cannot be read" in text and "nib-tiny" in text


def test_truncated_checkpoint_is_refused_clearly(tiny_registered, tmp_path):
    _, good = tiny_registered
    path = tmp_path / "half.pt"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        load_model("nib-tiny", str(path), device="cpu")
    assert str(path) in _one_line(err)


def test_wrong_architecture_checkpoint_says_what_differs(tiny_registered, tmp_path):
    _, path = tiny_registered
    wide = dict(TINY_CFG, vision_cfg=dict(TINY_CFG["vision_cfg"], width=96))
    (tmp_path / "nib-tiny-wide.json").write_text(__import__("json").dumps(wide))
    open_clip.add_model_config(tmp_path)
    with pytest.raises(ValueError) as err:
        load_model("nib-tiny-wide", str(path), device="cpu")
    text = _one_line(err)
    assert str(path) in text and "does not fit nib-tiny-wide" in text
    assert "instead of" in text  # the first tensor of another shape, with both shapes


def test_a_good_checkpoint_still_loads(tiny_registered):
    model, path = tiny_registered
    loaded = load_model("nib-tiny", str(path), device="cpu")
    for k, v in model.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[k], v), k


# --- pretrained tags offline: open_clip's cache -------------------------------------------------


@pytest.fixture
def offline_tag(tiny_registered, monkeypatch):
    """A pretrained tag 'openai' for nib-tiny (a hub entry), with the network unreachable."""
    from open_clip import pretrained as registry

    cfg = {"hf_hub": "nib-test/tiny-clip/", "url": "https://example.invalid/abc/nib-tiny.pt",
           "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    monkeypatch.setitem(registry._PRETRAINED, "nib-tiny", {"openai": cfg})
    monkeypatch.setattr(nibcore.models, "network_available", lambda *a, **k: False)
    return tiny_registered


def _write_hub_entry(cache, model, repo="nib-test/tiny-clip", commit="0123abcd"):
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.clip.state_dict().items()}
    save_file(state, str(snapshot / "open_clip_model.safetensors"))


def test_offline_tag_uses_the_hub_cache(offline_tag, tmp_path):
    model, _ = offline_tag
    _write_hub_entry(tmp_path, model)
    loaded = load_model("nib-tiny", "openai", device="cpu", cache_dir=tmp_path)
    for k, v in model.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[k], v), k
    assert tuple(loaded.mean) == (0.5, 0.5, 0.5), "the tag's preprocessing is kept"


def test_offline_tag_uses_a_cached_url_download(offline_tag, tmp_path):
    model, path = offline_tag
    (tmp_path / "nib-tiny.pt").write_bytes(path.read_bytes())
    loaded = load_model("nib-tiny", "openai", device="cpu", cache_dir=tmp_path)
    key = "visual.conv1.weight"
    assert torch.equal(loaded.clip.state_dict()[key], model.clip.state_dict()[key])


def test_offline_tag_without_cache_fails_clearly(offline_tag, tmp_path):
    with pytest.raises(RuntimeError) as err:
        load_model("nib-tiny", "openai", device="cpu", cache_dir=tmp_path)
    text = _one_line(err)
    assert "no network" in text and "no earlier download" in text and str(tmp_path) in text
