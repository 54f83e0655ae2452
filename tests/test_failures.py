"""The failures users hit first: grad modes around explain, bad checkpoints, offline weights,
and every file and size error in one line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_CFG, make_tiny
from PIL import Image

import nibcore
from nibcore import datasets, downloads, memory
from nibcore.cli import main
from nibcore.models import load_bundled, load_model

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
    monkeypatch.setattr(nibcore.models.loading, "network_available", lambda *a, **k: False)
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


def test_cached_weights_load_without_a_network_probe(offline_tag, tmp_path, monkeypatch):
    """Weights already on disk are used as they are: the load path never asks the network."""
    def probe(*args, **kwargs):
        raise AssertionError("network probed although the weights are cached")

    monkeypatch.setattr(nibcore.models.loading, "network_available", probe)
    model, _ = offline_tag
    _write_hub_entry(tmp_path, model)
    loaded = load_model("nib-tiny", "openai", device="cpu", cache_dir=tmp_path)
    assert torch.equal(loaded.clip.state_dict()["visual.conv1.weight"],
                       model.clip.state_dict()["visual.conv1.weight"])


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


# --- files, outputs and sizes: every error in one line (issue 19, item 8) ---------------------
#
# Four classes, each met at several entry points (the library's loaders, explain, the CLI): a
# folder where a file should be (or nothing at all), a file that is not what its name says, an
# output that cannot be written, sizes no memory holds. The library raises one line of a clear
# type; the CLI prints `error: ...` and exits 1, with no traceback.


def _cli_error(argv) -> str:
    """The one line `main(argv)` exits with (`error: ...`)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    text = str(exit_.value.code)
    assert text.startswith("error: ") and "\n" not in text, text
    return text


def _cli_stderr(*argv: str) -> str:
    """stderr of `python -m nibcore ARGV` in a fresh process, which must fail with status 1 and
    print one line, no traceback."""
    run = subprocess.run([sys.executable, "-m", "nibcore", *argv], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.fixture
def png(tmp_path, picture):
    path = tmp_path / "pair.png"
    picture.save(path)
    return path


# class 1: a folder where a file is expected, or nothing there


def test_a_folder_or_nothing_where_a_file_is_expected(tiny_registered, tiny, tmp_path, png):
    folder = tmp_path / "a-folder.png"
    folder.mkdir()
    snapshot = tmp_path / "snapshot"
    (snapshot / "mini-clip.json").mkdir(parents=True)
    entry_points = {
        "checkpoint": lambda p: load_model("nib-tiny", str(p), device="cpu"),
        "image path": lambda p: nibcore.explain(tiny, str(p), "a red circle"),
        "csv": lambda p: datasets.conceptual_captions(p.parent, csv_file=p.name),
    }
    for call in entry_points.values():
        with pytest.raises(IsADirectoryError) as err:
            call(folder)
        assert "is a folder, not a file" in _one_line(err) and str(folder) in _one_line(err)
    with pytest.raises(IsADirectoryError) as err:
        load_bundled("mini", snapshot)
    assert "mini model config" in _one_line(err)
    for call in (entry_points["checkpoint"], entry_points["image path"]):
        with pytest.raises(FileNotFoundError) as err:
            call(tmp_path / "nothing.pt")
        assert "file not found" in _one_line(err) and "nothing.pt" in _one_line(err)
    # a file where a folder is expected
    with pytest.raises(NotADirectoryError) as err:
        datasets.conceptual_captions(png)
    assert "is a file, not a folder" in _one_line(err)
    # the command line: a folder as the image, a missing image, a folder as the checkpoint
    assert "is a folder, not a file" in _cli_error(["explain", str(folder), "a red circle"])
    assert "image file not found" in _cli_error(["explain", str(tmp_path / "no.png"), "a dog"])
    text = _cli_error(["explain", str(png), "a red circle", "--model", "nib-tiny",
                       "--pretrained", str(folder), "--device", "cpu", "--side", "text"])
    assert "checkpoint" in text and "is a folder" in text


def test_the_command_line_prints_one_line_without_traceback(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    line = _cli_stderr("explain", str(folder), "a dog")
    assert str(folder) in line and "is a folder, not a file" in line


# class 2: a file that is not what its name says


def test_a_file_that_is_not_what_its_name_says(tiny, tmp_path, png):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture")
    with pytest.raises(ValueError) as err:
        nibcore.explain(tiny, str(fake), "a red circle")
    assert "cannot be read" in _one_line(err) and str(fake) in _one_line(err)
    assert "cannot be read" in _cli_error(["explain", str(fake), "a red circle"])
    # a truncated image fails where it is opened, not later inside the model
    half = tmp_path / "half.png"
    half.write_bytes(png.read_bytes()[:200])
    assert str(half) in _cli_error(["explain", str(half), "a red circle"])
    # the mini model's files: JSON that does not parse, weights safetensors cannot read
    bad = tmp_path / "snapshot"
    bad.mkdir()
    (bad / "mini-clip.json").write_text('{"model_cfg": ')
    with pytest.raises(ValueError) as err:
        load_bundled("mini", bad)
    assert "is not valid JSON" in _one_line(err) and "line 1" in _one_line(err)
    (bad / "mini-clip.json").write_text(
        nibcore.models.bundled_file("mini-clip.json").read_text())
    (bad / "mini-clip.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError) as err:
        load_bundled("mini", bad)
    assert "mini model weights" in _one_line(err) and "cannot be read" in _one_line(err)
    # a dataset's split file that does not parse, and a text file that is not UTF-8
    (tmp_path / "dataset_flickr8k.json").write_text("{not json")
    with pytest.raises(ValueError) as err:
        datasets.flickr8k(tmp_path, model=tiny)
    assert "is not valid JSON" in _one_line(err)
    tin = tmp_path / "tin"
    (tin / "val").mkdir(parents=True)
    (tin / "words.txt").write_bytes("n01\tcat\n".encode("utf-16"))
    (tin / "val" / "val_annotations.txt").write_text("a.JPEG\tn01\n")
    with pytest.raises(ValueError) as err:
        datasets.tiny_imagenet(tin)
    assert "is not UTF-8 text" in _one_line(err)
    # --params @file with JSON that does not parse
    (tmp_path / "params.json").write_text("{nib: 3}")
    text = _cli_error(["evaluate", "--params", f"@{tmp_path / 'params.json'}",
                       "--out", str(tmp_path / "run.jsonl")])
    assert "is not valid JSON" in text


# class 3: an output that cannot be written


def test_an_output_that_cannot_be_written(tmp_path, png, monkeypatch):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    # a file where a folder is expected, at three writers, before any work
    text = _cli_error(["explain", str(png), "a dog", "--out", str(blocker / "map.png")])
    assert "is a file, not a folder" in text and "overlay PNG" in text
    text = _cli_error(["evaluate", "--out", str(blocker / "sub" / "run.jsonl")])
    assert "is a file, not a folder" in text and "results file" in text
    with pytest.raises(NotADirectoryError) as err:
        downloads.fetch("http://example.invalid/a.zip", blocker / "a.zip",
                        opener=lambda *a, **k: pytest.fail("nothing may be fetched"))
    assert "is a file, not a folder" in _one_line(err)
    # a folder where the output file should be
    text = _cli_error(["explain", str(png), "a dog", "--out", str(tmp_path)])
    assert "is a folder" in text
    # a read-only folder (simulated: the tests may run as root, who writes anywhere)
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(nibcore.checks.os, "access", lambda p, mode: (
        False if Path(p) == locked and mode & os.W_OK else real(p, mode)))
    text = _cli_error(["explain", str(png), "a dog", "--out", str(locked / "map.png")])
    assert "is read-only" in text
    with pytest.raises(PermissionError) as err:
        datasets.download_conceptual_captions(locked / "cc", base_url="http://example.invalid")
    assert "is read-only" in _one_line(err)


# class 4: sizes no memory can hold


@pytest.mark.parametrize("method, params, knob", [
    ("nib", {"num_steps": 10 ** 13}, "num_steps"),
    ("nib", {"num_steps": 10 ** 7, "schedule": "completeness"}, "num_steps"),
    ("m2ib", {"n_samples": 10 ** 10}, "n_samples"),
    ("mfaba", {"num_steps": 10 ** 13}, "num_steps"),
    ("rise", {"n_masks": 10 ** 12}, "n_masks"),
])
def test_sizes_no_memory_holds_are_refused_before_allocating(tiny, picture, method, params, knob,
                                                             monkeypatch):
    def never(*args, **kwargs):
        pytest.fail("the method ran")
    monkeypatch.setattr(nibcore.METHODS[method], "attribute", never)
    with pytest.raises(memory.InsufficientMemoryError) as err:
        nibcore.explain(tiny, picture, "a red circle", method=method, **params)
    text = _one_line(err)
    assert isinstance(err.value, MemoryError)
    assert f"{knob}=" in text and "needs about" in text and "is available" in text
    assert f"lower {knob}" in text


def test_the_memory_check_compares_with_what_is_free(tiny, picture, monkeypatch):
    """The same call runs or is refused by the memory the machine has, not by a fixed cap."""
    need = memory.estimate(tiny, "nib", dict(nibcore.METHODS["nib"].defaults, num_steps=64), 1,
                           "image", tiny.tokenize(["a red circle"])).total
    monkeypatch.setattr(memory, "available_bytes", lambda device: need // 2)
    with pytest.raises(memory.InsufficientMemoryError, match="rows_per_call"):
        nibcore.explain(tiny, picture, "a red circle", num_steps=64)
    monkeypatch.setattr(memory, "available_bytes", lambda device: need * 2)
    assert nibcore.explain(tiny, picture, "a red circle", num_steps=64).raw.shape
    monkeypatch.setenv(memory.ENV_SWITCH, "0")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 0)
    assert nibcore.explain(tiny, picture, "a red circle", num_steps=2).raw.shape


def test_a_chunked_method_is_sized_by_its_chunk_not_its_steps(tiny):
    """NIB runs its (λ, pair) rows in chunks: num_steps only adds the schedule's few bytes per
    node, rows_per_call sizes the passes."""
    ids = tiny.tokenize(["a red circle"])

    def need(**params):
        return memory.estimate(tiny, "nib", dict(nibcore.METHODS["nib"].defaults, **params), 1,
                               "image", ids).parts

    few, many = need(num_steps=200, rows_per_call=8), need(num_steps=20000, rows_per_call=8)
    assert few["rows_per_call"] == many["rows_per_call"]
    assert many["num_steps"] - few["num_steps"] < 100 * (20000 - 200)
    assert need(num_steps=200, rows_per_call=64)["rows_per_call"] > 4 * few["rows_per_call"]


def test_too_large_sizes_at_the_command_line_and_in_evaluate(tiny, tmp_path):
    text = _cli_error(["explain", "--num-steps", str(10 ** 13), str(_png(tmp_path)),
                       "a red circle", "--side", "image", "--device", "cpu",
                       "--out", str(tmp_path / "map.png")])
    assert "num_steps=10000000000000" in text and "is available" in text
    from nibcore.evaluation import evaluate
    with pytest.raises(MemoryError) as err:
        evaluate(tiny, "scenes", ["rise"], n=1, params={"rise": {"n_masks": 10 ** 12}},
                 progress=False)
    assert "n_masks" in _one_line(err)
    line = _cli_stderr("explain", "--num-steps", str(10 ** 13), str(_png(tmp_path)), "a dog",
                       "--side", "image", "--device", "cpu", "--out", str(tmp_path / "m.png"))
    assert "needs about" in line


def _png(folder) -> Path:
    path = folder / "scene.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path
