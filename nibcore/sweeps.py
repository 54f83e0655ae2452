"""Evaluations as the chapters run them: cached by a fingerprint of the model and the code, and
swept over one method parameter (``num_steps``, ``layer``, β, ...) on the same pairs.

* :func:`evaluate_cached` — :func:`nibcore.evaluate` one pair per call with rows cached in
  :func:`cache_file` (named after :func:`fingerprint`, so stale rows are never reused).
* :func:`sweep`, :func:`layer_sweep` — one parameter over several values; :func:`paper_layer`
  is the one rule that maps the paper's layer of 12 blocks to a block of another tower (same
  relative depth, rounded down, kept :data:`~nibcore.attribution.MIN_BLOCKS_ABOVE` blocks below
  the top as :func:`~nibcore.attribution.default_layer` is).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .base import MIN_BLOCKS_ABOVE
from .evaluation import evaluate
from .models import ClipModel
from .downloads import file_digest
from .store import weights_sha256

#: The number of blocks of the paper's towers (ViT-B/32 and its text transformer).
PAPER_BLOCKS = 12


#: nibcore modules and sub-packages that cannot change an evaluation row (left out of the
#: fingerprint). Everything else is in: the methods (``methods/``, ``attribution``, ``metrics``,
#: ``evaluation``), the towers (``models``, ``inputs``) and the datasets (``datasets`` and
#: ``world/``, which renders the default ``scenes`` pairs).
_NOT_RESULTS = ("book", "cli.py", "__main__.py", "viz.py")

#: The nibcore package folder whose source :func:`fingerprint` hashes by default.
PACKAGE_ROOT = Path(__file__).resolve().parent


def fingerprint_files(root: str | Path = PACKAGE_ROOT) -> list[Path]:
    """The source files under the package folder ``root`` that :func:`fingerprint` hashes: every
    ``.py`` but those under :data:`_NOT_RESULTS`, sorted by path."""
    root = Path(root)
    return [path for path in sorted(root.rglob("*.py"))
            if path.relative_to(root).parts[0] not in _NOT_RESULTS]


def code_fingerprint(root: str | Path = PACKAGE_ROOT) -> str:
    """sha256 over the relative path and :func:`~nibcore.downloads.file_digest` of each of
    :func:`fingerprint_files` (``root``): changes with any file that can change a row."""
    root = Path(root)
    h = hashlib.sha256()
    for path in fingerprint_files(root):
        h.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def fingerprint(model: ClipModel, code: bool = True, root: str | Path = PACKAGE_ROOT) -> str:
    """A short hash of the model's weights and dtypes (:func:`~nibcore.store.weights_sha256`)
    and, with ``code``, of nibcore's source (:func:`code_fingerprint` of the package folder
    ``root``), so cached evaluation rows are reused only for the same model and the same code."""
    dtypes = sorted({str(t.dtype) for t in model.clip.state_dict().values()})
    parts = [weights_sha256(model), ",".join(dtypes)] + ([code_fingerprint(root)] if code else [])
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def cache_file(model: ClipModel, name: str, root: str | Path = "../_build/cache") -> Path:
    """``root/<model name>-<fingerprint>/<name>.jsonl``: the ``out=`` file of an evaluation.

    Build-local (``_build/`` is never committed): a clean checkout computes everything; a re-run
    of the same build reuses the rows (:func:`nibcore.evaluate` skips the rows already there).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.name)
    path = Path(root) / f"{safe}-{fingerprint(model)}" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


#: Methods timed without a warm-up call: their one-time overhead is negligible next to their
#: thousands of forward rows, and a warm-up would cost a whole extra attribution.
NO_WARMUP = ("rise",)


def evaluate_cached(model: ClipModel, dataset: str, methods: Sequence[str], *, n: int,
                    seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
                    sides: Sequence[str] = ("image", "text"), cache: str | Path | None = None,
                    text_protocols: Sequence[str] = ("paper", "m2ib", "clean"),
                    dataset_kw: dict[str, Any] | None = None, progress: bool = False,
                    **kw: Any) -> pd.DataFrame:
    """:func:`nibcore.evaluate` as the results chapters run it: one pair per call
    (``batch_size=1``, as the paper times methods, and so stochastic methods do not depend on
    which pairs share a batch), rows cached in ``cache_file(model, <dataset>, cache)`` (``None``:
    no cache), methods in :data:`NO_WARMUP` timed without a warm-up call. Rows of the methods in
    the given order."""
    params = {m: kw_ for m, kw_ in (params or {}).items() if m in methods}
    suffix = "".join(f"-{k}={v}" for k, v in sorted((dataset_kw or {}).items()))
    out = None if cache is None else cache_file(model, f"{dataset}{suffix}", cache)
    frames = {}
    for group, warm in (([m for m in methods if m not in NO_WARMUP], True),
                        ([m for m in methods if m in NO_WARMUP], False)):
        if group:
            df = evaluate(model, dataset, group, sides=sides, n=n, seed=seed,
                          params={m: params[m] for m in group if m in params},
                          text_protocols=text_protocols, out=out, progress=progress,
                          batch_size=1, warmup=warm, dataset_kw=dataset_kw, **kw)
            for m, part in df.groupby("method", sort=False):
                frames[m] = part
    return pd.concat([frames[m] for m in methods if m in frames], ignore_index=True)


def paper_layer(layer: int, n_blocks: int, paper_blocks: int = PAPER_BLOCKS) -> int:
    """The block of an ``n_blocks``-block tower that stands for the paper's ``layer`` of
    ``paper_blocks`` (12): the block at the same *relative depth*, rounded down,
    ``⌊layer · n_blocks / paper_blocks⌋``, but never closer to the top than
    :data:`~nibcore.attribution.MIN_BLOCKS_ABOVE` blocks (nor below block 0) — the clamp of
    :func:`~nibcore.attribution.default_layer`.

    The one rule for "the paper's layer ℓ on an L-block tower" (sweeps, ablations, the book's
    prose). The paper's default 9 lands on :func:`~nibcore.attribution.default_layer` on every
    tower, and no paper layer lands where a single block is left above the bottleneck (the
    regime the last-block proposition proves degenerate). The identity on a 12-block tower up to
    :func:`highest_layer`. On shallow towers several paper layers share one block, and a sweep
    cannot separate them (:func:`shared_blocks`).
    """
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ValueError(f"layer must be an int, got {layer!r}")
    if n_blocks < 1 or paper_blocks < 1:
        raise ValueError("n_blocks and paper_blocks must be positive")
    if not 0 <= layer < paper_blocks:
        raise ValueError(f"the paper's layer must lie in 0 … {paper_blocks - 1}, got {layer}")
    return int(min(layer * n_blocks // paper_blocks, highest_layer(n_blocks)))


def highest_layer(n_blocks: int) -> int:
    """The highest block :func:`paper_layer` maps to on an ``n_blocks``-block tower:
    :data:`~nibcore.attribution.MIN_BLOCKS_ABOVE` blocks below the top (block 0 on towers too
    shallow for that)."""
    return max(0, n_blocks - MIN_BLOCKS_ABOVE)


def shared_blocks(layers: Sequence[int], n_blocks: int, paper_blocks: int = PAPER_BLOCKS
                  ) -> dict[int, list[int]]:
    """The blocks of an ``n_blocks``-block tower that several of the paper's ``layers`` map to
    (:func:`paper_layer`), each with those layers in the given order: the settings a layer sweep
    on that tower cannot separate."""
    blocks: dict[int, list[int]] = {}
    for l in layers:
        blocks.setdefault(paper_layer(l, n_blocks, paper_blocks), []).append(l)
    return {b: ls for b, ls in blocks.items() if len(ls) > 1}


def layer_map(model: ClipModel, layers: Sequence[int], paper_blocks: int = PAPER_BLOCKS
              ) -> pd.DataFrame:
    """The paper's layers -> our blocks on each tower of ``model``: columns ``paper_layer``,
    ``relative_depth``, ``image_layer``, ``text_layer`` (and the towers' depths in ``attrs``)."""
    rows = [dict(paper_layer=l, relative_depth=l / paper_blocks,
                 image_layer=paper_layer(l, model.image.n_blocks, paper_blocks),
                 text_layer=paper_layer(l, model.text.n_blocks, paper_blocks)) for l in layers]
    out = pd.DataFrame(rows)
    out.attrs.update(image_blocks=model.image.n_blocks, text_blocks=model.text.n_blocks)
    return out


def sweep(model: ClipModel, dataset, method: str, param: str, values: Sequence[Any], *,
          n: int, seed: int = 0, sides: Sequence[str] = ("image", "text"),
          base: dict[str, Any] | None = None, seeds: Sequence[int] | None = None,
          out: str | Path | None = None, progress: bool = False, batch_size: int = 1,
          text_protocols: Sequence[str] = ("paper",), warmup: bool = False,
          **evaluate_kw: Any) -> pd.DataFrame:
    """Evaluate ``method`` with ``param`` set to each of ``values`` (``base`` holds the other
    parameters) on the same ``n`` pairs; returns the concatenated per-sample frames with a column
    named ``param`` holding the value (and ``method_seed`` when ``seeds`` is given: the method's
    own ``seed`` parameter, e.g. M2IB's noise, run for each value).

    All runs share ``out`` (rows are keyed by their parameters, so a re-run only computes what is
    missing). ``batch_size=1``: one pair per call, so stochastic methods do not depend on which
    pairs share a batch. ``warmup=False``: sweeps report no timings, so no untimed warm-up call.
    """
    frames = []
    for value in values:
        for s in (seeds if seeds is not None else [None]):
            kw = {**(base or {}), param: value}
            if s is not None:
                kw["seed"] = s
            df = evaluate(model, dataset, [method], sides=sides, n=n, seed=seed,
                          params={method: kw}, out=out, progress=progress,
                          batch_size=batch_size, text_protocols=text_protocols, warmup=warmup,
                          **evaluate_kw)
            df[param] = value
            if s is not None:
                df["method_seed"] = s
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def layer_sweep(model: ClipModel, dataset, layers: Sequence[int], *, n: int, seed: int = 0,
                method: str = "nib", sides: Sequence[str] = ("image", "text"),
                base: dict[str, Any] | None = None, out: str | Path | None = None,
                **kw: Any) -> pd.DataFrame:
    """:func:`sweep` over the paper's ``layers`` mapped by :func:`paper_layer` to each tower of
    ``model`` separately (the towers may differ in depth). Each distinct block is evaluated once;
    the frame has ``paper_layer`` and ``layer`` columns (one copy of the rows per paper layer, so
    several paper layers can share a block)."""
    frames = []
    for side in sides:
        blocks = model.tower(side).n_blocks
        distinct = list(dict.fromkeys(paper_layer(l, blocks) for l in layers))
        frames.append(sweep(model, dataset, method, "layer", distinct, n=n, seed=seed,
                            sides=[side], base=base, out=out, **kw))
    return by_paper_layer(pd.concat(frames, ignore_index=True), model, layers)


def by_paper_layer(df: pd.DataFrame, model: ClipModel, layers: Sequence[int]) -> pd.DataFrame:
    """Rows of a ``layer`` sweep (a ``layer`` and a ``side`` column) relabelled by the paper's
    ``layers``: for each side, the rows of the block :func:`paper_layer` maps each to, with a
    ``paper_layer`` column — one copy per paper layer, so several paper layers can share a
    block."""
    frames = []
    for side, part in df.groupby("side", sort=False):
        blocks = model.tower(side).n_blocks
        for l in layers:
            frames.append(part[part["layer"] == paper_layer(l, blocks)].assign(paper_layer=l))
    return pd.concat(frames, ignore_index=True)


def with_param(df: pd.DataFrame, param: str) -> pd.DataFrame:
    """Stored evaluation rows with one method parameter (read from their ``params`` JSON) as a
    column of its own, as :func:`sweep` returns them."""
    return df.assign(**{param: [json.loads(p)[param] for p in df["params"]]})
