"""Shared fixtures: a tiny randomly-initialised open_clip CLIP (fast on one CPU core)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import nibcore

# --- the package folders are read-only to the tests -------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: What the tests may read but never write: the package and its bundled data (the results store
#: included). Tests write under pytest's tmp paths; `make book` writes `_build/`.
PROTECTED = (ROOT / "nibcore", ROOT / "data")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: audit events that change the file system: event -> ((path argument, its dir_fd argument), ...)
_CHANGES = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
            "os.rename": ((0, 2), (1, 3)), "os.replace": ((0, 2), (1, 3)),
            "os.truncate": ((0, None),), "os.chmod": ((0, 2),), "os.symlink": ((1, 2),),
            "os.link": ((1, 3),), "shutil.rmtree": ((0, 1),)}


def protected(path, dir_fd: int | None = None) -> bool:
    """Whether ``path`` (relative to the folder open as ``dir_fd``, when given) lies in a package
    folder (bytecode caches aside)."""
    try:
        p = Path(os.fsdecode(path))
        if dir_fd is not None and not p.is_absolute():
            p = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / p
        p = p.resolve()
    except (TypeError, ValueError, OSError):
        return False
    return "__pycache__" not in p.parts and any(p.is_relative_to(d) for d in PROTECTED)


def refuse_package_writes(event: str, args: tuple) -> None:
    """An audit hook (PEP 578): any write, removal or rename under :data:`PROTECTED` from this
    process fails the test that attempts it — the suite runs with the package read-only, even as
    root, where file permissions would not stop it."""
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = (args[1] or "") if len(args) > 1 else "", args[2] if len(args) > 2 else 0
        writing = any(c in str(mode) for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
        targets = [(args[0], None)] if writing else []
    elif event in _CHANGES:
        targets = [(args[i], args[fd] if fd is not None and fd < len(args) else None)
                   for i, fd in _CHANGES[event]
                   if i < len(args) and isinstance(args[i], (str, bytes, os.PathLike))]
    else:
        return
    for target, dir_fd in targets:
        if protected(target, dir_fd if isinstance(dir_fd, int) else None):
            raise PermissionError(f"a test wrote to the package: {event} {os.fsdecode(target)}")


if os.environ.get("NIB_PACKAGE_WRITABLE") != "1":  # set only to regenerate fixtures on purpose
    sys.addaudithook(refuse_package_writes)


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
