"""The evaluation runner: attribute a dataset with several methods, score the maps, tabulate.

``evaluate(model, "scenes", ["nib", "m2ib"], n=100, out="runs/scenes.jsonl")`` returns a tidy
``pandas.DataFrame``, one row per sample × method × side; ``summarise(df)`` gives the paper's
Table-2 layout (metrics × methods, means) and ``fps(df)`` the speed table.

Rows are appended to ``out`` (JSON Lines) as each batch finishes; re-running with the same ``out``
skips the rows already there, so an interrupted run loses at most the batch in flight and a
resumed run returns the same frame as an uninterrupted one (up to the ``seconds`` column). The
file's rules (:mod:`nibcore.resultfile`): a last line cut by an interrupted write is ignored, and
set aside into ``<out>.partial`` before the next append; a malformed line anywhere else is an
error (:class:`nibcore.resultfile.ResultFileError`) naming the file and line.

Sharded runs: when ``torch.distributed`` is initialised (``torchrun --nproc_per_node=K -m nibcore
evaluate ...``, or a caller's own ``init_process_group``), rank r of K takes the batches r, r + K,
r + 2K, ... of the subset, appends its rows to its own part file ``<out>.part<r>-of-<K>``, and
rank 0 merges every rank's rows into ``out`` in the order a single-process run writes them (row
for row the same file, up to ``seconds``, when every process runs with the same thread count);
the part files are removed after the merge. Resuming reads ``out`` and every part file, so an
interrupted sharded run can be resumed with any number of processes. Every rank returns the
whole frame.

Columns of the frame (all metric columns are on a 0–100 scale, so means read as percentages,
except the ``*_s0`` / ``*_s1`` cosines and the ``*_margin`` score differences):

* identity: ``dataset``, ``model``, ``id`` (pair id), ``index`` (in the dataset), ``method``,
  ``side``, ``params`` (the method's kwargs as sorted JSON), ``text`` (the caption);
  scalar ``meta`` entries of the pair as ``meta_<key>``;
* cost: ``batch`` (pairs explained in the same call), ``seconds`` (that call's wall time / batch,
  after warm-up, excluding data loading and scoring), ``fwd``, ``bwd``, ``fwd_rows``,
  ``bwd_rows`` (passes counted during that call — of the whole call, divide by ``batch`` per
  pair), ``hardware``; with ``share_sides=True``, rows of a call that explained both sides
  carry ``sides`` = 2: ``seconds`` is then that call's wall time / batch / 2 (the two rows of a
  pair add up to the call's time) and the counted passes are those of the whole call;
* image side: ``img_s0``, ``img_s1``, ``img_conf_drop``, ``img_conf_incr``, ``img_insertion``,
  ``img_deletion`` (AUC × 100, :func:`nibcore.metrics.insertion_deletion`), ``degenerate`` (0/1:
  the map is constant or non-finite); with a ground-truth mask (``meta["mask"]``): ``pointing``
  (0/100), ``energy`` (on the [0, 1] map), ``energy_pos`` (on the positive part of the raw signed
  map), ``degenerate_raw`` (0/1: the raw map has no positive mass), ``mask_area`` (the chance
  level of both). Degenerate maps get defined values (:mod:`nibcore.metrics`), never NaN;
  with regions and their interventions (``meta["regions"]``, ``meta["removed"]``,
  ``meta["null"]``: the cue world, :func:`use_metrics`): per region ``r``, ``use_density_r``
  (:func:`nibcore.metrics.mass_density`), ``use_point_r`` (the pointing game into the region,
  0–100) and ``use_s_r`` (the cosine with the caption once the region is painted out), plus
  ``use_null_j`` (the cosine of the null interventions, :data:`USE_NULL` of them);
* text side: ``degenerate`` (0/1: the content tokens' scores are all equal); per protocol ``p``
  in ``text_protocols``: ``txt_s0_p``, ``txt_s1_p``,
  ``txt_conf_drop_p``, ``txt_conf_incr_p``; with ``meta["present"]``/``meta["absent"]``
  (``scenes_text``): ``text_gt`` (0/100: present phrase's mean score > absent phrase's),
  ``text_gt_margin``, and the same on the differing word only: ``text_gt_word``,
  ``text_gt_word_margin``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import columns, resultfile
from .attribution import Attribution, explain
from .base import METHODS, SIDES, cosine
from .checks import check_output_file
from .datasets import Pair, load_dataset
from .inputs import prepare_images
from .metrics import (CURVE_PROTOCOLS, TEXT_PROTOCOLS, class_text_features, degenerate_map,
                      degenerate_text, energy_in_mask, fit_mask, hardware, image_confidence,
                      insertion_deletion, mass_density, no_positive_mass, phrase_positions,
                      pointing_game, raw_pixel_map, text_confidence, text_ground_truth)
from .models import ClipModel

KEY = ("dataset", "model", "id", "text", "method", "side", "params")


# --- the output file -------------------------------------------------------------------------

#: The part files of sharded runs (the module docstring), as :mod:`nibcore.resultfile` names
#: them; every read and write of the output file goes through that module.
part_files = resultfile.part_files


def _rank_world(distributed: bool | None) -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` unless sharding applies."""
    import torch.distributed as dist
    on = dist.is_available() and dist.is_initialized()
    if distributed and not on:
        raise ValueError("distributed=True, but torch.distributed is not initialised: call "
                         "torch.distributed.init_process_group first (torchrun: the CLI does)")
    if on and distributed is not False:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def load_results(path: str | Path) -> pd.DataFrame:
    """All rows of a results file written by :func:`evaluate` (last copy of each row wins; a
    missing file has none). A cut last line (an interrupted write) is ignored with a
    :class:`nibcore.resultfile.CutLineWarning`; any other malformed line raises
    :class:`nibcore.resultfile.ResultFileError`."""
    rows = {resultfile.key_of(r, KEY): r for r in resultfile.read(path, missing_ok=True)}
    return pd.DataFrame(list(rows.values()))


# --- helpers ---------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


def _scalar_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {f"meta_{k}": _jsonable(v) for k, v in meta.items()
            if isinstance(v, (str, int, float, bool, np.integer, np.floating, np.bool_))}


def params_json(kw: dict[str, Any]) -> str:
    """A method's keyword arguments as canonical JSON (sorted keys), as stored with its rows."""
    return json.dumps(kw, sort_keys=True, default=str)


def sync_device(model: ClipModel) -> None:
    """Wait for ``model``'s CUDA device to finish queued work (no-op on the CPU), for timings."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def seeded_subset(size: int, n: int | None, seed: int) -> list[int]:
    """The first ``n`` of a seeded permutation: subsets for the same seed nest as ``n`` grows."""
    order = np.random.default_rng(seed).permutation(size)
    return [int(i) for i in (order if n is None else order[:n])]


def _image_metrics(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor, atts,
                   pairs: Sequence[Pair], class_features: torch.Tensor | None = None
                   ) -> list[dict[str, Any]]:
    # maps as they are: every metric scores a non-finite map by the degenerate rules itself
    maps = np.stack([np.asarray(a.scores, dtype=np.float32) for a in atts])
    conf = image_confidence(model, pixels, ids, maps)
    curves = insertion_deletion(model, pixels, ids, maps)
    rise = None if class_features is None else insertion_deletion(
        model, pixels, ids, maps, protocol="rise", class_features=class_features)
    use = use_metrics(model, ids, maps, pairs)
    out = []
    for b, (att, pair) in enumerate(zip(atts, pairs)):
        row = dict(img_s0=conf["s0"][b], img_s1=conf["s1"][b], img_conf_drop=conf["drop"][b],
                   img_conf_incr=conf["increase"][b], img_insertion=curves["insertion"][b],
                   img_deletion=curves["deletion"][b],
                   degenerate=int(degenerate_map(att.scores)))
        if rise is not None:
            row.update(img_insertion_rise=rise["insertion"][b],
                       img_deletion_rise=rise["deletion"][b])
        row.update(use[b])
        mask = pair.meta.get("mask")
        if mask is not None:
            mask = fit_mask(mask, att.scores.shape)
            raw = raw_pixel_map(att.raw, model.grid, model.image_size)
            row.update(
                pointing=100.0 * pointing_game(maps[b], mask),
                energy=100.0 * energy_in_mask(maps[b], mask),
                energy_pos=100.0 * energy_in_mask(raw, mask),
                degenerate_raw=int(no_positive_mass(raw)),
                mask_area=100.0 * float(mask.mean()))
        out.append(row)
    return out


#: Null interventions per pair in the cue world (``meta["null"]``): images whose background
#: noise is drawn afresh, which change pixels but no evidence; their cosines measure the noise
#: an intervention's effect is compared with (:mod:`nibcore.faithfulness`).
USE_NULL = 4


@torch.no_grad()
def use_metrics(model: ClipModel, ids: torch.Tensor, maps: np.ndarray,
                pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """The columns of the ground truth of use, per pair (empty for a pair without
    ``meta["regions"]``): the map's density and pointing game in each region, the cosine with
    the caption once each region is painted out (``meta["removed"]``, a region → image), and
    the cosines of the :data:`USE_NULL` null interventions (``meta["null"]``). Definitions and
    the aggregation: :mod:`nibcore.faithfulness`.

    Args:
        model: the model.
        ids: the pairs' tokenised captions ``(B, C)``.
        maps: the pairs' maps ``(B, H, W)``.
        pairs: the pairs.
    """
    out: list[dict[str, Any]] = [{} for _ in pairs]
    images, owner, names = [], [], []
    for b, pair in enumerate(pairs):
        regions = pair.meta.get("regions")
        if regions is None:
            continue
        null = list(pair.meta.get("null", ()))
        if len(null) != USE_NULL:
            raise ValueError(f"pair {pair.id}: {len(null)} null interventions in "
                             f"meta['null'], expected {USE_NULL}")
        for r, mask in regions.items():
            out[b][f"use_density_{r}"] = mass_density(maps[b], mask)
            out[b][f"use_point_{r}"] = 100.0 * pointing_game(maps[b], mask)
        removed = pair.meta["removed"]
        for name, img in [*removed.items(), *((f"null_{j}", im) for j, im in enumerate(null))]:
            images.append(img)
            owner.append(b)
            names.append(f"use_s_{name}" if not name.startswith("null_") else f"use_{name}")
    if images:
        text = model.encode_text(ids[owner])
        feats = torch.cat([model.encode_image(prepare_images(model, images[i:i + 64]))
                           for i in range(0, len(images), 64)])
        for b, name, c in zip(owner, names, cosine(feats, text).double().cpu().numpy()):
            out[b][name] = float(c)
    return out


def _word_positions(model: ClipModel, caption: str, phrase: str, word: str) -> list[int]:
    start = phrase_positions(model, caption, phrase)[0]
    return [start - 1 + p for p in phrase_positions(model, phrase, word)]


def _text_metrics(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor, atts,
                  pairs: Sequence[Pair], protocols: Sequence[str]) -> list[dict[str, Any]]:
    scores = [np.asarray(a.scores, dtype=np.float32) for a in atts]
    with torch.no_grad():
        image_features = model.encode_image(pixels)
    out: list[dict[str, Any]] = [{} for _ in atts]
    for p in protocols:
        conf = text_confidence(model, pixels, ids, scores, p, image_features)
        for b, row in enumerate(out):
            row.update({f"txt_s0_{p}": conf["s0"][b], f"txt_s1_{p}": conf["s1"][b],
                        f"txt_conf_drop_{p}": conf["drop"][b],
                        f"txt_conf_incr_{p}": conf["increase"][b]})
    for b, (att, pair) in enumerate(zip(atts, pairs)):
        meta = pair.meta
        out[b]["degenerate"] = int(degenerate_text(att.scores))
        if "present" in meta and "absent" in meta:
            hit, margin = text_ground_truth(
                scores[b], phrase_positions(model, pair.text, meta["present"]),
                phrase_positions(model, pair.text, meta["absent"]))
            out[b].update(text_gt=100.0 * hit, text_gt_margin=margin)
            if "present_word" in meta and "absent_word" in meta:
                hit, margin = text_ground_truth(
                    scores[b],
                    _word_positions(model, pair.text, meta["present"], meta["present_word"]),
                    _word_positions(model, pair.text, meta["absent"], meta["absent_word"]))
                out[b].update(text_gt_word=100.0 * hit, text_gt_word_margin=margin)
    return out


# --- the runner ------------------------------------------------------------------------------

def evaluate(model: ClipModel, dataset, methods: str | Sequence[str],
             sides: Sequence[str] = ("image", "text"), n: int | None = 100, seed: int = 0,
             params: dict[str, dict[str, Any]] | None = None,
             text_protocols: Sequence[str] = TEXT_PROTOCOLS, out: str | Path | None = None,
             progress: bool = True, batch_size: int = 8, warmup: bool = True,
             dataset_kw: dict[str, Any] | None = None,
             distributed: bool | None = None, share_sides: bool = False,
             curve_protocols: Sequence[str] = ("ours",)) -> pd.DataFrame:
    """Attribute ``n`` pairs of ``dataset`` with each of ``methods`` on each of ``sides`` and score
    every map (see the module docstring for the columns).

    ``dataset``: a loader (``len`` + ``ds[i] -> Pair``) or a name for
    :func:`nibcore.datasets.load_dataset` (``dataset_kw`` are passed on; flickr8k gets ``model``).
    ``n``: pairs to use (``None``: all), the first ``n`` of a permutation seeded by ``seed``.
    ``params``: method name -> kwargs, e.g. ``{"nib": {"num_steps": 5}}``.
    ``out``: a JSON Lines file; rows are appended per batch, and rows already there are reused.
    ``batch_size``: pairs per :func:`explain` call; batches are fixed chunks of the subset, so
    results do not depend on where a run was interrupted. ``warmup``: one untimed call per
    method × side first.
    ``distributed``: ``None`` shards the batches over the ranks when ``torch.distributed`` is
    initialised (see the module docstring; call it on every rank), ``False`` never shards,
    ``True`` requires an initialised process group.
    ``share_sides``: when both sides of a batch are to be computed with a method that shares work
    between them (:meth:`nibcore.attribution.Method.shares_sides`: NIB), explain them in one
    ``explain(..., side="both")`` call (the same maps and metrics; fewer passes; see the ``sides``
    column). Off by default: timings then stay one side per call.
    ``curve_protocols``: the insertion / deletion protocols scored (:data:`CURVE_PROTOCOLS`):
    ``"ours"`` always (``img_insertion``, ``img_deletion``); with ``"rise"`` also RISE's
    (``img_insertion_rise``, ``img_deletion_rise``: softmax over the dataset's class prompts,
    ``dataset.info["class_prompts"]``).
    """
    dataset = _resolve_dataset(model, dataset, dataset_kw)
    methods, params, sides, protocols = _check_args(methods, params, sides, text_protocols,
                                                    batch_size)
    ds_name = getattr(dataset, "name", type(dataset).__name__)
    rank, world = _rank_world(distributed)
    indices = seeded_subset(len(dataset), n, seed)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    mine = list(range(rank, len(chunks), world))  # this rank's shard: batches r, r + K, ...
    path = check_output_file(out, "results file") if out is not None else None
    book = _Ledger(ds_name, model.name, {m: params_json(params.get(m, {})) for m in methods},
                   path, protocols)
    run = _Run(model, ds_name, hardware(model.device), methods, sides, params, protocols, book,
               warmup, share_sides, write_to=path if path is None or world == 1
               else resultfile.part_file(path, rank, world),
               class_features=rise_classes(model, dataset, curve_protocols))
    total = sum(len(chunks[c]) for c in mine) * len(methods) * len(sides)
    already = sum(1 for c in mine for i in chunks[c] for m in methods for s in sides
                  if book.has(i, m, s))
    from tqdm.auto import tqdm
    desc = f"evaluate {ds_name}" + (f" (rank 0's shard of {world})" if world > 1 else "")
    bar = tqdm(total=total, initial=already, disable=not progress or rank != 0, desc=desc,
               unit="row")
    try:
        for chunk in (chunks[c] for c in mine):
            if book.missing(chunk, methods, sides):
                bar.update(run.chunk(dataset, chunk))
    finally:
        bar.close()
    if run.skipped:
        warnings.warn(f"{len(run.skipped)} pair(s) skipped: caption longer than the model's "
                      f"context ({model.context_length - 2} tokens): {run.skipped[:5]}")
    rows = _gather(book, chunks, mine, methods, sides, rank, world, path)
    return book.frame(rows, indices, methods, sides)


def rise_classes(model: ClipModel, dataset, curve_protocols: Sequence[str]
                 ) -> torch.Tensor | None:
    """The text features of ``dataset``'s class prompts when ``curve_protocols`` include
    ``"rise"`` (None otherwise); a one-line error for an unknown protocol or a dataset without
    class prompts.

    Args:
        model: the model.
        dataset: the dataset (its ``info["class_prompts"]``).
        curve_protocols: insertion / deletion protocols (:data:`CURVE_PROTOCOLS`).
    """
    for p in curve_protocols:
        if p not in CURVE_PROTOCOLS:
            raise ValueError(f"unknown insertion/deletion protocol {p!r}; choose from "
                             f"{list(CURVE_PROTOCOLS)}")
    if "ours" not in curve_protocols:
        raise ValueError('curve_protocols must include "ours" (the img_insertion/img_deletion '
                         'columns every table reads)')
    if "rise" not in curve_protocols:
        return None
    prompts = getattr(dataset, "info", {}).get("class_prompts")
    if not prompts:
        raise ValueError(f"RISE's insertion/deletion protocol needs the dataset's class prompts "
                         f"(info['class_prompts']); "
                         f"{getattr(dataset, 'name', type(dataset).__name__)} has none")
    return class_text_features(model, prompts)


def _resolve_dataset(model: ClipModel, dataset, dataset_kw: dict[str, Any] | None):
    """A dataset object from a name (:func:`~nibcore.datasets.load_dataset`; flickr8k gets the
    model) or the object itself."""
    if not isinstance(dataset, str):
        return dataset
    kw = dict(dataset_kw or {})
    if dataset in ("flickr8k", "flickr"):
        kw.setdefault("model", model)
    return load_dataset(dataset, **kw)


@dataclass
class _Run:
    """One :func:`evaluate` run's settings and state, scoring one batch of the subset at a time
    (:meth:`chunk`): what is missing from the ledger is explained, scored, recorded and appended
    to ``write_to``."""

    model: ClipModel
    ds_name: str
    hw: str
    methods: list[str]
    sides: list[str]
    params: dict[str, dict[str, Any]]
    protocols: list[str]
    book: "_Ledger"
    warmup: bool
    share_sides: bool
    write_to: Path | None
    class_features: torch.Tensor | None = None  # RISE's protocol: the class prompts' features
    warmed: set[tuple[str, str]] = field(default_factory=set)
    unsupported: set[tuple[str, str]] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)

    def chunk(self, dataset, chunk: list[int]) -> int:
        """Score what is missing of the pairs ``chunk`` (dataset indices); returns the number of
        rows done (computed, or skipped for a caption the model cannot read)."""
        model, book, methods = self.model, self.book, self.methods
        pairs = [dataset[i] for i in chunk]  # data loading: outside the timed calls
        for i, pair in zip(chunk, pairs):
            book.learn(i, pair)
        keep = [j for j, p in enumerate(pairs) if model.text_problem(p.text) is None]
        self.skipped += [pairs[j].id for j in range(len(pairs)) if j not in keep]
        done = (len(pairs) - len(keep)) * len(methods) * len(self.sides)
        todo = book.missing(chunk, methods, self.sides)
        if not keep:
            return done
        pairs, idx = [pairs[j] for j in keep], [chunk[j] for j in keep]
        pixels = prepare_images(model, [p.image for p in pairs])
        ids = model.tokenize([p.text for p in pairs])
        shared = {m for m in methods if self.share_sides and METHODS[m].shares_sides()
                  and all((m, s) in todo for s in SIDES)}
        runs = [(m, s) for m, s in todo if m not in shared] + [(m, "both") for m in shared]
        runs.sort(key=lambda ms: methods.index(ms[0]))  # stable: sides keep their order
        for m, s in runs:
            if (m, s) not in self.unsupported:
                done += self._method(m, s, pairs, idx, pixels, ids)
        return done

    def _method(self, m: str, s: str, pairs: list[Pair], idx: list[int], pixels: torch.Tensor,
                ids: torch.Tensor) -> int:
        """Method ``m`` on side ``s`` (or ``"both"``) of a batch: the rows it adds."""
        run_sides = list(SIDES) if s == "both" else [s]
        need = {r: [j for j, p in enumerate(pairs) if not self.book.has_pair(p.id, m, r)]
                for r in run_sides}
        if not any(need.values()):
            return 0
        try:
            results, _ = score_pairs(self.model, m, s, self.params.get(m, {}), pairs, pixels,
                                     ids, self.protocols,
                                     warm=self.warmup and (m, s) not in self.warmed,
                                     class_features=self.class_features)
        except NotImplementedError as err:
            warnings.warn(f"{m} does not support the {s} side ({err}); skipped")
            self.unsupported.add((m, s))
            return 0
        self.warmed.add((m, s))
        new = []
        for r, j in ((r, j) for r in run_sides for j in need[r]):
            pair = pairs[j]
            row = dict(dataset=self.ds_name, model=self.model.name, id=pair.id, index=idx[j],
                       method=m, side=r, params=self.book.pjson[m], text=pair.text,
                       **_scalar_meta(pair.meta), hardware=self.hw, **results[r][j])
            new.append(self.book.add(json.loads(json.dumps(
                {k: _jsonable(v) for k, v in row.items()}))))
        if self.write_to is not None:
            resultfile.append(self.write_to, new)
        return len(new)


def _check_args(methods: str | Sequence[str], params: dict[str, dict[str, Any]] | None,
                sides: str | Sequence[str], text_protocols: Sequence[str], batch_size: int
                ) -> tuple[list[str], dict[str, dict[str, Any]], list[str], list[str]]:
    """:func:`evaluate`'s arguments checked (each method's kwargs validated now, not after an
    hour) and normalised to lists: ``(methods, params, sides, protocols)``."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    params = dict(params or {})
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    stray = set(params) - set(methods)
    if stray:
        raise ValueError(f"params given for method(s) {sorted(stray)} not in methods={methods}")
    for m in methods:
        METHODS[m](**params.get(m, {}))
    sides = [sides] if isinstance(sides, str) else list(sides)
    for s in sides:
        if s not in SIDES:
            raise ValueError(f"unknown side {s!r}; choose from {list(SIDES)}")
    protocols = list(text_protocols)
    for p in protocols:
        if p not in TEXT_PROTOCOLS:
            raise ValueError(f"unknown text protocol {p!r}; choose from {list(TEXT_PROTOCOLS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return methods, params, sides, protocols


class _Ledger:
    """The rows an :func:`evaluate` run knows, keyed by :data:`KEY`: those already in ``path``
    and its part files (a resumed run) and those computed now; and which dataset index holds
    which pair, so pairs already scored need not be loaded again."""

    def __init__(self, ds_name: str, model_name: str, pjson: dict[str, str],
                 path: Path | None, protocols: Sequence[str]):
        self.ds_name, self.model_name, self.pjson = ds_name, model_name, pjson
        self.done: dict[tuple, dict[str, Any]] = {}
        self.ids_of: dict[int, str] = {}  # dataset index -> pair id
        self.text_of: dict[str, str] = {}  # pair id -> caption
        if path is None:
            return
        for source in [path, *part_files(path)]:
            for row in resultfile.read(source, missing_ok=True):
                if row.get("side") == "text" and any(f"txt_conf_drop_{p}" not in row
                                                     for p in protocols):
                    continue  # computed without a protocol asked for now: redo
                self.done[tuple(row.get(k) for k in KEY)] = row
        for row in self.done.values():
            if row.get("dataset") == ds_name and row.get("model") == model_name:
                self.ids_of.setdefault(int(row["index"]), row["id"])
                self.text_of.setdefault(row["id"], row["text"])

    def key(self, pid: str, method: str, side: str) -> tuple:
        return (self.ds_name, self.model_name, pid, self.text_of[pid], method, side,
                self.pjson[method])

    def has_pair(self, pid: str, method: str, side: str) -> bool:
        return self.key(pid, method, side) in self.done

    def has(self, i: int, method: str, side: str) -> bool:
        """Is the row of dataset index ``i`` known?"""
        return i in self.ids_of and self.has_pair(self.ids_of[i], method, side)

    def missing(self, chunk: list[int], methods: list[str], sides: list[str]
                ) -> list[tuple[str, str]]:
        """The (method, side) runs a batch still needs (all of them while a pair is unknown)."""
        if any(i not in self.ids_of for i in chunk):
            return [(m, s) for m in methods for s in sides]
        return [(m, s) for m in methods for s in sides
                if any(not self.has(i, m, s) for i in chunk)]

    def learn(self, i: int, pair: Pair) -> None:
        self.ids_of[i], self.text_of[pair.id] = pair.id, pair.text

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.done[self.key(row["id"], row["method"], row["side"])] = row
        return row

    def frame(self, rows: list[dict[str, Any]], indices: list[int], methods: list[str],
              sides: list[str]) -> pd.DataFrame:
        """``rows`` in the subset's order: pair, method, side."""
        by_key = {tuple(r[k] for k in KEY): r for r in rows}
        id_at = {int(r["index"]): r["id"] for r in rows}
        self.text_of.update({r["id"]: r["text"] for r in rows})
        return pd.DataFrame([by_key[self.key(id_at[i], m, s)] for i in indices if i in id_at
                             for m in methods for s in sides
                             if self.key(id_at[i], m, s) in by_key])


def _gather(book: _Ledger, chunks: list[list[int]], mine: list[int], methods: list[str],
            sides: list[str], rank: int, world: int, path: Path | None) -> list[dict[str, Any]]:
    """Every rank's rows in the order a single-process run writes them (batch, method, side,
    pair); rank 0 merges them into ``path`` and the part files go once the merge is complete."""
    ordered = [(c, book.done[book.key(book.ids_of[i], m, s)]) for c in mine for m in methods
               for s in sides for i in chunks[c] if book.has(i, m, s)]
    if world > 1:
        import torch.distributed as dist
        everyone: list = [None] * world
        dist.all_gather_object(everyone, ordered)
        ordered = sorted((r for part in everyone for r in part), key=lambda cr: cr[0])  # stable
    rows = [r for _, r in ordered]
    if path is not None:
        if rank == 0:
            resultfile.merge(path, rows, KEY)
        if world > 1:
            dist.barrier()  # the merged file is complete before any part file goes
            resultfile.part_file(path, rank, world).unlink(missing_ok=True)
    return rows


def _explain(model: ClipModel, method: str, side: str, kw: dict[str, Any], pixels: torch.Tensor,
             texts: list[str]):
    return explain(model, pixels, texts, method=method, side=side, **kw)


def score_pairs(model: ClipModel, method: str, side: str, kw: dict[str, Any],
                pairs: list[Pair], pixels: torch.Tensor, ids: torch.Tensor,
                protocols: Sequence[str], warm: bool = False,
                class_features: torch.Tensor | None = None
                ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Attribution]]]:
    """Explain one batch of ``pairs`` in one call on ``side`` (``"both"``: both sides in one
    call), time it and score it.

    Args:
        model: the model.
        method: a key of :data:`nibcore.METHODS`; ``kw`` its parameters.
        side: ``"image"``, ``"text"`` or ``"both"``.
        pairs: the pairs; ``pixels`` and ``ids`` their prepared images and tokenised captions.
        protocols: text protocols scored (:data:`nibcore.metrics.TEXT_PROTOCOLS`).
        warm: explain the first pair once untimed first.
        class_features: also score RISE's insertion/deletion protocol over these class
            prompts' features (:func:`rise_classes`); None: ours only.

    Returns ``({side: one row of metric values and costs per pair}, {side: the attributions})``.
    """
    texts = [p.text for p in pairs]
    run_sides = list(SIDES) if side == "both" else [side]
    if warm:
        _explain(model, method, side, kw, pixels[:1], texts[:1])
    sync_device(model)
    t0 = time.perf_counter()
    result = _explain(model, method, side, kw, pixels, texts)
    sync_device(model)
    elapsed = time.perf_counter() - t0
    atts = dict(zip(run_sides, result if side == "both" else [result]))
    cost = {s: [dict(batch=len(pairs), seconds=elapsed / len(pairs) / len(run_sides),
                     fwd=att.passes.get("forward"), bwd=att.passes.get("backward"),
                     fwd_rows=att.passes.get("forward_rows"),
                     bwd_rows=att.passes.get("backward_rows"),
                     **({"sides": 2} if side == "both" else {})) for att in atts[s]]
            for s in run_sides}
    out = {}
    for s in run_sides:
        if s == "image":
            scores = _image_metrics(model, pixels, ids, atts[s], pairs, class_features)
        else:
            scores = _text_metrics(model, pixels, ids, atts[s], pairs, protocols)
        out[s] = [{**c, **m} for c, m in zip(cost[s], scores)]
    return out, atts


# --- tables ----------------------------------------------------------------------------------

def _labels(df: pd.DataFrame) -> pd.Series:
    """Column label per row: the method, plus its params where one method ran with several."""
    if "params" not in df:
        return df["method"]
    several = df.groupby("method")["params"].nunique()
    return df.apply(lambda r: r["method"] if several[r["method"]] <= 1
                    else f"{r['method']} {r['params']}", axis=1)


def summarise(df: pd.DataFrame, counts: bool = True, metrics: Iterable[str] | None = None
              ) -> pd.DataFrame:
    """The paper's Table-2 layout: one row per metric, one column per method, sample means.

    ``counts=True``: columns are ``(method, "mean")`` and ``(method, "n")`` (non-missing samples
    behind each mean); ``counts=False``: the means only. Rows are the metric columns present in
    ``df`` (:func:`nibcore.columns.metric_columns`; their labels are the registry's); when ``df``
    holds several datasets or models, the index is ``(dataset, model, metric)``. A method run
    with several parameter sets gets one column per set.
    """
    if df.empty:
        return pd.DataFrame()
    df = df.assign(_label=_labels(df))
    wanted = list(metrics) if metrics is not None else columns.metric_columns(
        [c[len("txt_conf_drop_"):] for c in df.columns if c.startswith("txt_conf_drop_")])
    wanted = [c for c in wanted if c in df.columns and df[c].notna().any()]
    methods = list(dict.fromkeys(df["_label"]))
    multi = df[["dataset", "model"]].drop_duplicates().shape[0] > 1 if {"dataset", "model"} <= set(
        df.columns) else False
    groups = list(df.groupby(["dataset", "model"], sort=False)) if multi else [(None, df)]
    blocks = []
    for g, part in groups:
        long = part.melt(id_vars=["_label"], value_vars=wanted, var_name="metric")
        stats = long.groupby(["metric", "_label"], sort=False)["value"].agg(["mean", "count"])
        stats = stats.rename(columns={"count": "n"})
        table = stats.unstack("_label")
        table = table.reindex(index=[w for w in wanted if w in table.index])
        table.columns = table.columns.swaplevel(0, 1)
        cols = [(m, s) for m in methods for s in ("mean", "n")]
        table = table.reindex(columns=pd.MultiIndex.from_tuples(cols))
        table[[c for c in cols if c[1] == "n"]] = table[[c for c in cols if c[1] == "n"]] \
            .fillna(0).astype(int)
        if g is not None:
            table.index = pd.MultiIndex.from_tuples([(*g, i) for i in table.index],
                                                    names=["dataset", "model", "metric"])
        else:
            table.index.name = "metric"
        blocks.append(table)
    table = pd.concat(blocks)
    table.columns.names = ["method", None]
    if not counts:
        table = table.xs("mean", axis=1, level=1)
    return table


def fps(df: pd.DataFrame) -> pd.DataFrame:
    """Speed per method × side: ``pairs``, ``seconds`` (sum of the timed calls), ``fps``
    (attributed pairs per second, after warm-up, data loading excluded), counted passes per pair
    (``fwd``, ``bwd``: calls; ``fwd_rows``, ``bwd_rows``: rows), mean ``batch`` and ``hardware``.
    """
    if df.empty:
        return pd.DataFrame()
    df = df.assign(_label=_labels(df))
    out = []
    for (label, side), part in df.groupby(["_label", "side"], sort=False):
        row = dict(method=label, side=side, pairs=len(part), seconds=part["seconds"].sum())
        row["fps"] = row["pairs"] / row["seconds"] if row["seconds"] > 0 else float("nan")
        for c in ("fwd", "bwd", "fwd_rows", "bwd_rows"):
            row[c] = float((part[c] / part["batch"]).mean())
        row["batch"] = float(part["batch"].mean())
        row["hardware"] = "; ".join(sorted(set(part["hardware"].astype(str))))
        out.append(row)
    return pd.DataFrame(out).set_index(["method", "side"])
