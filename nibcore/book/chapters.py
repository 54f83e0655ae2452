"""How the results chapters run: which datasets a model's chapters use, the method parameters
of a build (the paper's defaults, or a smoke run's), and making sure a real dataset is in place."""

from __future__ import annotations

from typing import Any

from .. import datasets
from .paper import DISPLAY

def book_datasets(model: str) -> list[str]:
    """The datasets of the main results for ``model`` (its name as passed to
    :func:`nibcore.book.theory.book_model`): the held-out scenes for the bundled ``"mini"`` model,
    the paper's three otherwise."""
    return ["scenes"] if model == "mini" else ["cc", "imagenet", "flickr8k"]


#: A smoke run's departures from the paper's defaults: the costly methods cut to a few rows of
#: work (RISE 16 masks per side, M2IB 2 steps × 2 samples, MFABA 2 steps), so that every chapter
#: still runs every code path on ViT-B/32 in CI. Its numbers mean nothing, and are labelled so.
SMOKE_PARAMS: dict[str, dict[str, Any]] = {"rise": {"n_masks": 16},
                                           "m2ib": {"num_steps": 2, "n_samples": 2},
                                           "mfaba": {"num_steps": 2}}


def book_params(smoke: bool = False, rise_masks: int | None = None) -> dict[str, dict[str, Any]]:
    """The method parameters of the results chapters: the paper's defaults, or in a smoke run
    (a pass that only checks the code runs; its numbers mean nothing) :data:`SMOKE_PARAMS`;
    ``rise_masks`` sets RISE's mask count in either."""
    params = {m: dict(kw) for m, kw in SMOKE_PARAMS.items()} if smoke else {}
    if rise_masks is not None:
        params["rise"] = {"n_masks": int(rise_masks)}
    return params


def describe_params(params: dict[str, dict[str, Any]]) -> str:
    """Words for :func:`book_params`' departures from the paper's defaults."""
    if not params:
        return "all methods with the paper's defaults (RISE: 6000 image / 200 text masks)"
    parts = [f"{DISPLAY.get(m, m)} with " + ", ".join(f"{k}={v}" for k, v in kw.items())
             for m, kw in params.items()]
    return "the paper's defaults except " + "; ".join(parts)


def prepare_dataset(name: str, download: bool = False) -> None:
    """Make sure a real dataset (``"cc"``, ``"imagenet"``, ``"flickr8k"``) is where
    :func:`nibcore.datasets.load_dataset` looks; with ``download`` fetch it when missing (needs
    the network: Colab). Scenes need nothing."""
    helpers = {"cc": datasets.download_conceptual_captions,
               "imagenet": datasets.download_tiny_imagenet,
               "flickr8k": datasets.download_flickr8k}
    if name not in helpers:
        return
    try:
        if name == "flickr8k":  # its loader needs a model; check the split file instead
            split = datasets.data_root() / datasets.FOLDERS[name] / "dataset_flickr8k.json"
            if not split.is_file():
                raise FileNotFoundError(f"{split} not found")
        else:
            datasets.load_dataset(name)
    except FileNotFoundError:
        if not download:
            raise
        helpers[name]()
