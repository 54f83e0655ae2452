"""Computations behind the book's theory chapters: Theorems 1–3 of the NIB paper, measured.

* Theorem 1/2 (the narrowing bottleneck): :func:`kl_bound` — the upper bound
  ``E_x[‖λz‖² / 2σ²]`` on ``I(z̃(λ); x)`` for ``z̃ = λz + ε``, ``ε ~ N(0, σ²I)`` — and
  :func:`mutual_information` — a Monte Carlo estimate of ``I(z̃(λ); x)`` itself when ``x`` is
  uniform over a finite set of inputs, to compare the bound with.
* Theorem 3 (completeness): :func:`objective_path` — ``f(λ)`` on any grid of λ, and
  :func:`completeness_table` — Σ attributions vs ``f(1) − f(0)`` per schedule and ``num_steps``.
* The axioms: :func:`equivalent_model` (a functionally equivalent re-parametrisation, for
  implementation invariance) and :func:`full_context_attribution` (text-side scores over the whole
  context, whose padding positions the objective does not depend on: sensitivity).
* Small helpers the chapters share: :func:`similarity_matrix`, :func:`sweep`, :func:`spread`,
  :func:`property_evidence`, :func:`random_twin`, :func:`bottleneck_states`,
  :func:`mutual_information_grid`, :func:`completeness_summary`, :func:`flat_below`. (The
  paper's tables: :mod:`nibcore.book.paper`.)

Everything here is plain computation (numpy / torch / pandas); figures live in :mod:`nibcore.viz`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..attribution import Attribution, explain
from ..base import METHODS, cosine, default_layer
from ..inputs import prepare_pairs
from ..methods.common import split_state
from ..models import MINI, ClipModel, bundled_file, build_clip, load_model

# --- models -----------------------------------------------------------------------------------


def random_twin(seed: int = 0) -> ClipModel:
    """A CLIP with the bundled mini model's architecture and *random* weights (seeded).

    Useful to contrast trained and untrained behaviour (e.g. LayerNorm biases are all zero in a
    freshly initialised open_clip model, non-zero after training).
    """
    cfg = json.loads(bundled_file("mini-clip.json").read_text())
    torch.manual_seed(seed)
    return build_clip(cfg["model_cfg"], cfg.get("image_size"), cfg.get("mean"), cfg.get("std"),
                      name=f"random-mini-{seed}")


def book_model(name: str = MINI, pretrained: str | None = None) -> ClipModel:
    """The model a chapter's parameters name: ``"mini"`` (bundled, offline), ``"random-mini"``
    (:func:`random_twin`), or any open_clip name with ``pretrained`` (e.g. ``"ViT-B-32-quickgelu"``,
    ``"openai"`` — needs network)."""
    if name == "random-mini":
        return random_twin(0)
    return load_model(name, pretrained)


def similarity_matrix(model: ClipModel, images: Sequence, texts: Sequence[str]) -> np.ndarray:
    """Cosine similarities ``(len(images), len(texts))`` of projected features."""
    with torch.no_grad():
        pixels, _ = prepare_pairs(model, list(images), [texts[0]] * len(images))
        ids = model.tokenize(list(texts))
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(ids), dim=-1)
    return (img @ txt.T).cpu().numpy()


# --- Theorems 1 and 2: the narrowing bottleneck -------------------------------------------------


def kl_bound(sq_norms: np.ndarray | float, lambdas: np.ndarray | float,
             sigmas: np.ndarray | float) -> np.ndarray:
    """Theorem 1's bound ``E_x[λ²‖z‖² / (2σ²)]`` on ``I(z̃(λ); x)`` (in nats).

    ``sq_norms``: ``‖z‖²`` of the bottleneck state of each input (the expectation is the mean over
    them); ``lambdas`` / ``sigmas``: arrays that broadcast together (e.g. ``sigmas[:, None]`` and
    ``lambdas[None, :]`` for a grid). It is the KL divergence between ``N(λz, σ²I)`` and the
    reference ``N(0, σ²I)``, averaged over inputs.
    """
    mean_sq = float(np.mean(np.asarray(sq_norms, dtype=np.float64)))
    lam = np.asarray(lambdas, dtype=np.float64)
    sig = np.asarray(sigmas, dtype=np.float64)
    if np.any(sig <= 0):
        raise ValueError("sigma must be > 0 (the bound diverges as sigma -> 0 for lambda > 0)")
    return 0.5 * lam ** 2 * mean_sq / sig ** 2


def mutual_information(states: np.ndarray | torch.Tensor, lam: float, sigma: float,
                       draws: int = 64, seed: int = 0) -> float:
    """Monte Carlo estimate of ``I(z̃; x)`` (nats) for ``z̃ = λ z(x) + ε``, ``ε ~ N(0, σ²I)``,
    with ``x`` uniform over the ``B`` rows of ``states`` ``(B, ...)``.

    ``I = E_x E_{z̃|x} [log p(z̃|x) − log (1/B) Σ_j p(z̃|x_j)]``; ``draws`` noise draws per input,
    seeded. The exact value lies in ``[0, log B]``; it is 0 at λ = 0.
    """
    z = torch.as_tensor(np.asarray(states), dtype=torch.float64).reshape(len(states), -1)
    b = z.shape[0]
    if lam == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    mu = lam * z                                                   # (B, d)
    total = 0.0
    for i in range(b):
        eps = torch.randn(draws, z.shape[1], generator=gen, dtype=torch.float64) * sigma
        sample = mu[i] + eps                                        # (draws, d)
        # log N(sample; mu_j, σ²I) up to the shared constant, for every j
        sq = torch.cdist(sample, mu) ** 2                           # (draws, B)
        logp = -sq / (2 * sigma ** 2)
        log_mix = torch.logsumexp(logp, dim=1) - math.log(b)
        total += float((logp[:, i] - log_mix).mean())
    return total / b


def mutual_information_grid(states: np.ndarray | torch.Tensor, lambdas: Sequence[float],
                            sigmas: Sequence[float], draws: int = 64, seed: int = 0
                            ) -> dict[float, np.ndarray]:
    """:func:`mutual_information` on a grid: ``{σ: (len(lambdas),) estimates in nats}``, every
    estimate with the same ``draws`` and ``seed``."""
    return {s: np.array([mutual_information(states, lam, s, draws, seed=seed) for lam in lambdas])
            for s in sigmas}


# --- Theorem 3: the path and completeness -------------------------------------------------------


def bottleneck(model: ClipModel, image, text: str, side: str = "image",
               layer: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """``(z, target, ids, layer)``: the state ``z`` ``(1, N, D)`` entering block ``layer`` of the
    ``side`` tower, the other modality's feature ``(1, E)``, the ids for pooling (text side)."""
    tower = model.tower(side)
    layer = default_layer(tower) if layer is None else tower.check_layer(layer)
    pixels, ids = prepare_pairs(model, image, text)
    _, layer, z, pool_ids, target = split_state(model, pixels, ids, side, layer)
    return z, target, pool_ids, layer


def bottleneck_states(model: ClipModel, pairs: Iterable, side: str = "image",
                      layer: int | None = None) -> torch.Tensor:
    """The :func:`bottleneck` states ``z`` of several scenes (anything with ``.image`` and
    ``.caption``), stacked: ``(B, N, D)``."""
    return torch.cat([bottleneck(model, p.image, p.caption, side, layer)[0] for p in pairs])


def objective_path(model: ClipModel, image, text: str, lambdas: Iterable[float],
                   side: str = "image", layer: int | None = None,
                   dtype: torch.dtype = torch.float32) -> np.ndarray:
    """``f(λ) = cos(upper(λ·z), target)`` for each λ (the quantity NIB integrates along).

    ``dtype=torch.float64`` runs the upper blocks in double precision (on a copy of the model),
    which resolves f for λ far below float32's reach of the LayerNorm epsilon.
    """
    z, target, ids, layer = bottleneck(model, image, text, side, layer)
    tower = model.tower(side)
    if dtype != torch.float32:
        twin = copy.deepcopy(model.clip).to(dtype)
        tower = type(tower)(twin, model.passes)
        z, target = z.to(dtype), target.to(dtype)
    lam = torch.as_tensor(list(lambdas), dtype=z.dtype, device=z.device)
    out = []
    with torch.no_grad():
        for chunk in lam.split(64):
            rows = chunk[:, None, None] * z.expand(len(chunk), -1, -1)
            pool = None if ids is None else ids.expand(len(chunk), -1)
            out.append(cosine(tower.upper(rows, layer, pool), target.expand(len(chunk), -1)))
    return torch.cat(out).double().cpu().numpy()


def completeness_table(model: ClipModel, pairs: Sequence[tuple[Any, str]],
                       schedules: Sequence[str] = ("paper", "completeness"),
                       num_steps: Sequence[int] = (10, 50), side: str = "image",
                       layer: int | None = None) -> pd.DataFrame:
    """Σ NIB attributions vs ``f(1) − f(0)`` for each pair, schedule and ``num_steps``.

    Columns: ``pair``, ``schedule``, ``num_steps``, ``evaluations`` (λ points), ``sum``,
    ``f1_minus_f0``, ``gap`` (sum − (f1 − f0)), ``relative_gap`` (gap / |f1 − f0|), ``seconds``.
    """
    rows = []
    images, texts = [p[0] for p in pairs], [p[1] for p in pairs]
    for schedule in schedules:
        for n in num_steps:
            start = time.perf_counter()
            atts = explain(model, images, texts, method="nib", side=side, num_steps=n,
                           schedule=schedule, layer=layer)
            seconds = (time.perf_counter() - start) / len(pairs)
            for k, a in enumerate(atts):
                total = float(a.raw.astype(np.float64).sum())
                delta = a.f1 - a.f0
                rows.append(dict(pair=k, schedule=schedule, num_steps=n,
                                 evaluations=_schedule_size(schedule, n), sum=total,
                                 f1_minus_f0=delta, gap=total - delta,
                                 relative_gap=(total - delta) / abs(delta) if delta else np.nan,
                                 seconds=seconds))
    return pd.DataFrame(rows)


#: display names of the columns of :func:`completeness_summary`
COMPLETENESS_COLUMNS = {"evaluations": "λ points", "mean_sum": "Σ A (mean)",
                        "mean_f1_minus_f0": "f(1)−f(0) (mean)",
                        "median_abs_relative_gap": "median |rel. gap|",
                        "seconds_per_pair": "s / pair"}


def completeness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`completeness_table` summarised per ``(schedule, num_steps)``: ``evaluations``,
    ``mean_sum``, ``mean_f1_minus_f0``, ``median_abs_relative_gap``, ``seconds_per_pair``."""
    return (table.assign(abs_relative_gap=table.relative_gap.abs())
            .groupby(["schedule", "num_steps"])
            .agg(evaluations=("evaluations", "first"),
                 mean_sum=("sum", "mean"), mean_f1_minus_f0=("f1_minus_f0", "mean"),
                 median_abs_relative_gap=("abs_relative_gap", "median"),
                 seconds_per_pair=("seconds", "mean")))


def flat_below(path: np.ndarray, grid: np.ndarray, rel: float = 0.01) -> float:
    """The first λ of ``grid`` ``(G,)`` where ``f`` leaves ``f(0)`` by more than ``rel`` of
    ``|f(1) − f(0)|``; ``path`` ``(G + 1,)`` is ``f(0)`` followed by ``f`` on ``grid`` (ending at
    λ = 1). ``grid[0]`` when no point leaves it."""
    path = np.asarray(path, dtype=np.float64)
    i = int(np.argmax(np.abs(path[1:] - path[0]) > rel * np.abs(path[-1] - path[0])))
    return float(grid[i])


def _schedule_size(schedule: str, n: int) -> int:
    from ..schedules import make_schedule

    return int(make_schedule(schedule, n)[0].numel())


# --- the axioms --------------------------------------------------------------------------------


def equivalent_model(model: ClipModel, seed: int = 0, scale: float = 3.0) -> ClipModel:
    """A functionally equivalent copy of ``model`` with different weights.

    In every block of both towers: the MLP's hidden units are permuted (rows of the first linear
    layer and its bias, columns of the second), and the attention's value projection is multiplied
    by ``scale`` while the output projection is divided by it. The function computed is the same
    (up to rounding); the parameters are not.
    """
    twin = ClipModel(copy.deepcopy(model.clip), model.preprocess, model.tokenizer,
                     f"{model.name}-equivalent", model.mean, model.std)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tower in (twin.image, twin.text):
            for block in tower.blocks:
                fc, proj = block.mlp.c_fc, block.mlp.c_proj
                perm = torch.randperm(fc.out_features, generator=gen)
                fc.weight.copy_(fc.weight[perm])
                fc.bias.copy_(fc.bias[perm])
                proj.weight.copy_(proj.weight[:, perm])
                d = block.attn.embed_dim
                block.attn.in_proj_weight[2 * d:] *= scale
                block.attn.in_proj_bias[2 * d:] *= scale
                block.attn.out_proj.weight /= scale
    return twin


def parameter_distance(a: ClipModel, b: ClipModel) -> float:
    """Largest absolute difference between corresponding parameters of two models."""
    return max(float((p - q).abs().max()) for p, q in zip(a.clip.parameters(), b.clip.parameters()))


def full_context_attribution(model: ClipModel, image, text: str, layer: int | None = None,
                             num_steps: int = 10, schedule: str = "paper") -> np.ndarray:
    """NIB's raw text-side scores over the *whole* context ``(C,)``, padding included.

    The text feature is pooled at the end-of-text token under a causal mask, so the positions after
    it cannot change the objective: an attribution method satisfying sensitivity gives them 0.
    (``explain`` cuts the padding off before running NIB, an exact speed-up for that reason; this
    function keeps it, to show the zeros.)
    """
    from ..methods.nib import scaled_path
    from ..schedules import make_schedule

    z, target, ids, layer = bottleneck(model, image, text, "text", layer)
    lambdas, weights = make_schedule(schedule, num_steps)
    grad_sum, _, _ = scaled_path(model.text, z, layer, ids, target, lambdas, weights, 128)
    return (z * grad_sum).sum(dim=-1)[0].detach().cpu().numpy()


# --- sweeps and properties ---------------------------------------------------------------------


def explain_over(model: ClipModel, image, text: str, method: str, param: str, values: Sequence,
                 side: str = "image", **fixed: Any) -> list[Attribution]:
    """One attribution of one pair per value of the parameter ``param`` (others fixed); over a
    dataset, :func:`nibcore.sweeps.sweep` evaluates the same."""
    return [explain(model, image, text, method=method, side=side, **{param: v}, **fixed)
            for v in values]


def spread(maps: Sequence[np.ndarray]) -> dict[str, Any]:
    """How much a set of maps ``(H, W)`` (or token scores) disagree.

    ``std``: the per-element standard deviation (same shape as a map); ``max_pairwise``: the
    largest |difference| between two maps anywhere; ``mean_pairwise``: the mean |difference|
    over all pairs and elements.
    """
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    diffs = [np.abs(stack[i] - stack[j])
             for i in range(len(stack)) for j in range(i + 1, len(stack))]
    return dict(std=stack.std(axis=0),
                max_pairwise=float(max(d.max() for d in diffs)) if diffs else 0.0,
                mean_pairwise=float(np.mean([d.mean() for d in diffs])) if diffs else 0.0)


def property_evidence(model: ClipModel, image, text: str, methods: Sequence[str],
                      side: str = "image", method_params: dict[str, dict] | None = None
                      ) -> pd.DataFrame:
    """Measured evidence for the properties of Table 1, one row per method.

    Each method runs twice on the same pair — with ``seed=0`` and ``seed=1`` when it takes a seed,
    otherwise simply twice. Columns: ``method``, ``takes_seed``, ``max_diff_two_runs`` (largest
    |difference| of the [0, 1] maps), ``deterministic`` (that difference is below 1e-6),
    ``signed`` (the raw scores contain negative values), ``forward`` / ``backward`` (passes
    counted during the first run), ``seconds`` (the first run).
    """
    method_params = method_params or {}
    rows = []
    for name in methods:
        params = dict(method_params.get(name, {}))
        takes_seed = "seed" in METHODS[name].defaults
        start = time.perf_counter()
        first = explain(model, image, text, method=name, side=side,
                        **({**params, "seed": 0} if takes_seed else params))
        seconds = time.perf_counter() - start
        second = explain(model, image, text, method=name, side=side,
                         **({**params, "seed": 1} if takes_seed else params))
        diff = float(np.abs(first.scores - second.scores).max())
        rows.append(dict(method=name, takes_seed=takes_seed, max_diff_two_runs=diff,
                         deterministic=diff < 1e-6, signed=bool((first.raw < 0).any()),
                         forward=first.passes["forward"], backward=first.passes["backward"],
                         seconds=seconds))
    return pd.DataFrame(rows)


# --- Theorem 2: the noise-free limit -------------------------------------------------------------


def noisy_objective(model: ClipModel, image, text: str, lam: float, sigma: float,
                    draws: int = 16, seed: int = 0, side: str = "image",
                    layer: int | None = None) -> np.ndarray:
    """``f(λz + ε)`` for ``draws`` seeded noise draws ``ε ~ N(0, σ²I)`` ``(draws,)``: the
    stochastic bottleneck of Theorem 1, whose spread vanishes as σ → 0 (Theorem 2)."""
    z, target, ids, layer = bottleneck(model, image, text, side, layer)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((draws, *z.shape[1:]), generator=gen).to(z) * sigma
    with torch.no_grad():
        rows = lam * z + eps
        pool = None if ids is None else ids.expand(draws, -1)
        f = cosine(model.tower(side).upper(rows, layer, pool), target.expand(draws, -1))
    return f.double().cpu().numpy()


# --- ground truth: which object does a map point at -----------------------------------------------


def mask_means(values: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean of a map ``(H, W)`` inside each mask ``(K, H, W)`` → ``(K,)``. Masks are resized
    (nearest) to the map's size when they differ."""
    values = np.asarray(values, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] != values.shape:
        from PIL import Image

        masks = np.stack([np.asarray(Image.fromarray(m).resize(values.shape[::-1],
                                                               Image.NEAREST)) for m in masks])
    return np.array([values[m].mean() if m.any() else np.nan for m in masks])


def patch_values(attribution: Attribution, grid: tuple[int, int]) -> np.ndarray:
    """Signed raw image-side scores of a per-token attribution as a patch grid ``(rows, cols)``
    (CLS dropped, no normalisation)."""
    return np.asarray(attribution.raw[1:], dtype=np.float64).reshape(grid)


def named_vs_other(model: ClipModel, scene_list: Sequence, methods: Sequence[str],
                   method_params: dict[str, dict] | None = None) -> pd.DataFrame:
    """For two-object scenes whose caption names only object 0: per method and scene, the mean
    of the [0, 1] map inside the named object's mask and inside the other object's mask, and the
    mean *signed* raw score on the patches each object covers (per-token methods only)."""
    method_params = method_params or {}
    rows = []
    size = model.image_size
    for scene in scene_list:
        caption = scene.caption_for([0])
        for name in methods:
            a = explain(model, scene.image, caption, method=name, **method_params.get(name, {}))
            named, other = mask_means(a.scores, scene.masks[:2])
            row = dict(scene=scene.seed, method=name, caption=caption, named=named, other=other)
            if a.raw.ndim == 1:
                patches = patch_values(a, model.grid)
                up = np.kron(patches, np.ones((size[0] // model.grid[0], size[1] // model.grid[1])))
                row["raw_named"], row["raw_other"] = mask_means(up, scene.masks[:2])
            rows.append(row)
    return pd.DataFrame(rows)


# --- the last-block degeneracy ------------------------------------------------------------------


def token_mass_by_layer(model: ClipModel, pairs: Sequence[tuple[Any, str]], side: str = "text",
                        layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Where NIB's attribution mass sits, for every bottleneck layer of one tower.

    Per ``layer`` and pair: ``content_share`` = Σ|A| over the content tokens (text: between SOT
    and EOT; image: the patches) / Σ|A| over all tokens; ``pooled_share`` = the same for the
    pooled token (EOT / CLS); ``content_max_over_pooled`` = the largest content |A| divided by the
    pooled token's |A|. ``blocks_above`` = blocks run on the scaled state. At the input of the
    last block (``blocks_above == 1``) the content tokens reach the output only through
    LayerNorm, and their attributions vanish (the chapter's proposition).
    """
    tower = model.tower(side)
    layers = range(tower.n_blocks) if layers is None else [tower.check_layer(k) for k in layers]
    images, texts = [p[0] for p in pairs], [p[1] for p in pairs]
    rows = []
    for layer in layers:
        for k, a in enumerate(explain(model, images, texts, method="nib", side=side,
                                      layer=layer)):
            mass = np.abs(a.raw.astype(np.float64))
            pooled, content = (mass[-1], mass[1:-1]) if side == "text" else (mass[0], mass[1:])
            rows.append(dict(side=side, layer=layer, blocks_above=tower.n_blocks - layer, pair=k,
                             content_share=content.sum() / mass.sum(),
                             pooled_share=pooled / mass.sum(),
                             content_max_over_pooled=content.max() / pooled))
    return pd.DataFrame(rows)


def token_mass_summary(mass: pd.DataFrame) -> pd.DataFrame:
    """:func:`token_mass_by_layer` (one or both towers) as medians per ``(side, layer)``."""
    return (mass.groupby(["side", "layer"])
            .agg(blocks_above=("blocks_above", "first"), pairs=("pair", "count"),
                 content_share=("content_share", "median"),
                 pooled_share=("pooled_share", "median"),
                 content_max_over_pooled=("content_max_over_pooled", "median")))


# --- the two schedules' maps ---------------------------------------------------------------------


def schedule_agreement(model: ClipModel, scene_list: Sequence, paper_steps: int = 10,
                       completeness_steps: int = 5) -> pd.DataFrame:
    """The ``"paper"`` and ``"completeness"`` schedules on the same scenes (image side, each
    scene's own caption).

    Per scene: ``correlation`` of the raw patch scores (CLS dropped, as the maps do); the object
    whose mask holds the larger mean of each schedule's [0, 1] map (``top_paper``,
    ``top_completeness``) and whether they agree; ``cls_share_*`` = |A(CLS)| / Σ|A| (the share
    of the attribution the maps drop); ``relative_gap_*`` = completeness gap / |f(1) − f(0)|.
    """
    images, texts = [s.image for s in scene_list], [s.caption for s in scene_list]
    runs = {"paper": explain(model, images, texts, schedule="paper", num_steps=paper_steps),
            "completeness": explain(model, images, texts, schedule="completeness",
                                    num_steps=completeness_steps)}
    rows = []
    for k, scene in enumerate(scene_list):
        row = dict(scene=scene.seed)
        for name, atts in runs.items():
            a = atts[k]
            mass = np.abs(a.raw.astype(np.float64))
            row[f"top_{name}"] = scene.objects[int(np.nanargmax(mask_means(a.scores,
                                                                           scene.masks)))]
            row[f"cls_share_{name}"] = mass[0] / mass.sum()
            row[f"relative_gap_{name}"] = a.completeness_gap / abs(a.f1 - a.f0)
        p, c = runs["paper"][k].raw[1:], runs["completeness"][k].raw[1:]
        row["correlation"] = float(np.corrcoef(p, c)[0, 1])
        row["same_top_object"] = row["top_paper"] == row["top_completeness"]
        rows.append(row)
    return pd.DataFrame(rows)


# --- Theorem 2: what the limit does ---------------------------------------------------------


def typical_distance(states: np.ndarray | torch.Tensor) -> float:
    """The median distance ``‖z(x) − z(x')‖`` between the rows of ``states`` ``(B, ...)``: the
    scale against which σ decides whether inputs can be told apart."""
    z = torch.as_tensor(np.asarray(states), dtype=torch.float64).reshape(len(states), -1)
    d = torch.cdist(z, z)
    return float(np.median(d[torch.triu_indices(len(z), len(z), 1).unbind()].numpy()))


def information_vs_sigma(states: np.ndarray | torch.Tensor, lambdas: Sequence[float],
                         sigmas: Sequence[float], draws: int = 64, seed: int = 0
                         ) -> pd.DataFrame:
    """Monte Carlo ``I(z̃(λ); x)`` (nats) for every σ (rows) and λ (columns), ``x`` uniform over
    the rows of ``states``; the last column is ``log B``, its upper limit."""
    grid = mutual_information_grid(states, list(lambdas), list(sigmas), draws, seed)
    table = pd.DataFrame([grid[s] for s in sigmas], index=pd.Index(list(sigmas), name="sigma"),
                         columns=[f"λ={lam:g}" for lam in lambdas])
    table["log B"] = math.log(len(states))
    return table


def noisy_attribution(model: ClipModel, image, text: str, sigma: float, draws: int = 8,
                      num_steps: int = 10, seed: int = 0, side: str = "image",
                      layer: int | None = None) -> np.ndarray:
    """NIB's sum computed on the *noisy* bottleneck of Theorem 1: per token ``(N,)``,
    ``Σ_c z_ic · mean_{k, draws} ∂f/∂z̃_ic(λ_k z + ε)`` with ``λ_k = k / num_steps`` and ``draws``
    seeded draws ``ε ~ N(0, σ²I)`` per λ. At σ = 0 it is NIB's (paper-schedule) attribution; as
    σ → 0 it tends to it — the limit Theorem 2 is about, read as a statement about the method."""
    z, target, ids, layer = bottleneck(model, image, text, side, layer)
    lam = torch.arange(1, num_steps + 1, dtype=z.dtype, device=z.device) / num_steps
    rows = (lam[:, None, None, None] * z[None]).expand(num_steps, draws, *z.shape[1:])
    rows = rows.reshape(num_steps * draws, *z.shape[1:])
    gen = torch.Generator().manual_seed(seed)
    noisy = (rows + torch.randn(rows.shape, generator=gen).to(z) * sigma).requires_grad_(True)
    pool = None if ids is None else ids.expand(len(noisy), -1)
    f = cosine(model.tower(side).upper(noisy, layer, pool), target.expand(len(noisy), -1))
    (grad,) = torch.autograd.grad(f.sum(), noisy)
    return (z[0] * grad.mean(0)).sum(-1).double().cpu().numpy()
