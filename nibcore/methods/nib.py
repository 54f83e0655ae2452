"""NIB — the Narrowing Information Bottleneck (the paper's method).

The hidden state ``z`` entering block ``layer`` is scaled by one scalar λ (all tokens, all
channels); the attribution of token i is ``Σ_c z_ic · ∫_0^1 ∂f/∂z̃_ic(λz) dλ`` with
``f`` = cosine of the projected features with the other modality's (constant) feature. The
integral is a quadrature over a schedule (see :mod:`nibcore.schedules`); all (λ, pair) rows go
through the upper blocks together, in chunks of at most ``rows_per_call`` rows.

Only the quadrature's rows are back-propagated: f(0) is one forward of the upper blocks without
gradients (on the image side, where no token ids enter, one row serves every pair of the batch),
and f(1) is the λ = 1 row of the path when the schedule ends there, else one more forward without
gradients. Every pass through the upper blocks runs the last block on the pooled token alone
(``Tower.upper``'s pooled-token floor, :mod:`nibcore.models`): the same function as the full block,
up to float32 rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..base import Method, RawResult, cosine, default_layer, register
from ..checks import check_positive_int
from ..models import ClipModel, Tower
from ..schedules import make_schedule
from .common import split_state


class PathResult(NamedTuple):
    """What :func:`scaled_path` computes along the path λ·z."""

    grad_sum: torch.Tensor  #: Σ_s w_s ∂f/∂z̃(λ_s z), ``(B, N, D)``
    values: torch.Tensor    #: f(λ_s z), ``(S, B)``
    features: torch.Tensor  #: the projected features upper(λ_s z), ``(S, B, E)``, no graph


def scaled_path(tower: Tower, z: torch.Tensor, layer: int, ids: torch.Tensor | None,
                target: torch.Tensor, lambdas: torch.Tensor, weights: torch.Tensor,
                max_rows: int) -> PathResult:
    """Weighted gradient sum, objective and features along the path λ·z.

    ``z`` ``(B, N, D)``, ``target`` ``(B, E)``, ``lambdas``/``weights`` ``(S,)``.
    Gradients are taken with respect to the scaled state only (no parameter gradients).
    """
    steps, batch = lambdas.shape[0], z.shape[0]
    lam = lambdas.to(z.device, z.dtype)
    w = weights.to(z.device, z.dtype)
    step_of_row = torch.arange(steps, device=z.device).repeat_interleave(batch)
    pair_of_row = torch.arange(batch, device=z.device).repeat(steps)
    grad_sum = torch.zeros_like(z)
    values = torch.empty(steps * batch, dtype=z.dtype, device=z.device)
    features = torch.empty(steps * batch, target.shape[-1], dtype=z.dtype, device=z.device)
    for start in range(0, steps * batch, max_rows):
        s = step_of_row[start:start + max_rows]
        p = pair_of_row[start:start + max_rows]
        scaled = (lam[s, None, None] * z[p]).requires_grad_(True)
        feature = tower.upper(scaled, layer, None if ids is None else ids[p])
        f = cosine(feature, target[p])
        (grad,) = torch.autograd.grad(f.sum(), scaled)
        grad_sum.index_add_(0, p, w[s, None, None] * grad)
        values[start:start + max_rows] = f.detach()
        features[start:start + max_rows] = feature.detach()
    return PathResult(grad_sum, values.view(steps, batch), features.view(steps, batch, -1))


def objective(tower: Tower, z: torch.Tensor, layer: int, ids: torch.Tensor | None,
              target: torch.Tensor, lam: float) -> torch.Tensor:
    """f(λ z) ``(B,)`` for one λ, forward only (no graph).

    At λ = 0 on a tower that pools without token ids (the image tower) the state is the same zero
    tensor for every pair, so one row is run and its feature is scored against every target; and
    every token of that row is the same and stays so through blocks that add no positions (the
    positions enter below the bottleneck), so two tokens stand for all N — the pooled one and one
    more, which average pooling reads. The same feature in real arithmetic; in float32 the
    attention averages two equal values with an exact ½ instead of N with a rounded 1/N (float
    noise, :data:`nibcore.numerics.FLOAT_NOISE_RTOL`), for 2/N of the work."""
    with torch.no_grad():
        if lam == 0.0 and ids is None:
            feature = tower.upper(torch.zeros_like(z[:1, :2]), layer)
            return cosine(feature.expand(z.shape[0], -1), target)
        return cosine(tower.upper(lam * z, layer, ids), target)


def path_values(tower: Tower, z: torch.Tensor, layer: int, ids: torch.Tensor | None,
                target: torch.Tensor, lambdas: torch.Tensor, rows_per_call: int,
                pairs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """f(λ_k z) and the feature norm ‖upper(λ_k z)‖, forward only, in chunks of ``rows_per_call``
    (λ, pair) rows (the completeness schedule's probes, :data:`nibcore.schedules.PathProbe`):
    two ``(K, B)`` for ``lambdas`` ``(K,)`` and every pair; with ``pairs`` ``(K,)``, row k is
    pair ``pairs[k]`` at ``lambdas[k]``: two ``(K,)``."""
    k, batch = lambdas.shape[0], z.shape[0]
    lam = lambdas.to(z.device, z.dtype)
    if pairs is None:
        step_of_row = torch.arange(k, device=z.device).repeat_interleave(batch)
        pair_of_row = torch.arange(batch, device=z.device).repeat(k)
    else:
        step_of_row, pair_of_row = torch.arange(k, device=z.device), pairs.to(z.device)
    values = torch.empty(len(step_of_row), dtype=z.dtype, device=z.device)
    norms = torch.empty_like(values)
    with torch.no_grad():
        for start in range(0, len(step_of_row), rows_per_call):
            s = step_of_row[start:start + rows_per_call]
            p = pair_of_row[start:start + rows_per_call]
            pool = None if ids is None else ids[p]
            features = tower.upper(lam[s, None, None] * z[p], layer, pool)
            values[start:start + rows_per_call] = cosine(features, target[p])
            norms[start:start + rows_per_call] = torch.linalg.vector_norm(features, 2, dim=-1)
    if pairs is None:
        return values.view(k, batch), norms.view(k, batch)
    return values, norms


@register
class NIB(Method):
    """Narrowing Information Bottleneck (Zhu et al., ICLR 2025,
    https://arxiv.org/abs/2502.14889).

    ``f1``/``f0`` are f(λ=1) and f(λ=0), evaluated exactly and without backward passes (f(1)
    is the path's last row when the schedule ends at λ = 1; see the module docstring).

    Args:
        layer: index of the block whose *input* is the bottleneck. ``None``: the paper's 9 of 12
            scaled to depth (:func:`~nibcore.attribution.default_layer`; 9 on ViT-B/32).
        num_steps: quadrature nodes (10; per decade for ``"completeness"``).
        schedule: ``"paper"`` (λ_i = i/n, as the paper's code) or ``"completeness"`` (log-spaced
            Gauss–Legendre whose sum matches f(1) − f(0)); see :mod:`nibcore.schedules`.
        rows_per_call: (λ, pair) rows per pass through the upper blocks (memory knob only; 128).
            Deprecated name: ``max_rows``.
    """

    name = "nib"
    renamed = {"max_rows": "rows_per_call"}

    def __init__(self, *, layer: int | None = None, num_steps: int = 10,
                 schedule: str = "paper", rows_per_call: int = 128) -> None:
        make_schedule(schedule, num_steps)
        check_positive_int("rows_per_call", rows_per_call)
        self.layer, self.num_steps = layer, num_steps
        self.schedule, self.rows_per_call = schedule, rows_per_call

    def _layer(self, tower: Tower) -> int:
        layer = self.params["layer"]
        return default_layer(tower) if layer is None else tower.check_layer(layer)

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        if side == "text":  # exact speed-up: the causal text tower never looks past EOT
            ids = model.trim(ids)
        tower, layer, z, pool_ids, target = split_state(model, pixels, ids, side,
                                                        self._layer(model.tower(side)))
        return self._path(tower, z, layer, pool_ids, target)[0]

    def attribute_both(self, model: ClipModel, pixels: torch.Tensor,
                       ids: torch.Tensor) -> dict[str, RawResult]:
        """Both sides of every pair, each tower's lower blocks run once: the state entering the
        bottleneck of one tower, continued through its upper blocks at λ = 1, is the target
        feature of the other side, instead of the full other tower again. The text feature is
        that one pass (the same operations on the same batch as
        :func:`~nibcore.base.other_features`, so the same bits); the image feature is the image
        path's own row at λ = 1 where the schedule has one (the paper's does) — the same feature,
        computed in a batch of all the path's rows (float noise of another batch shape,
        :data:`nibcore.numerics.FLOAT_NOISE_RTOL`), with no pass of its own."""
        ids = model.trim(ids)
        image, text = model.tower("image"), model.tower("text")
        image_layer, text_layer = self._layer(image), self._layer(text)
        with torch.no_grad():
            z_image, z_text = image.lower(pixels, image_layer), text.lower(ids, text_layer)
            text_feature = text.upper(z_text, text_layer, ids)
        image_result, image_feature = self._path(image, z_image, image_layer, None, text_feature)
        if image_feature is None:
            with torch.no_grad():
                image_feature = image.upper(z_image, image_layer)
        text_result, _ = self._path(text, z_text, text_layer, ids, image_feature)
        return {"image": image_result, "text": text_result}

    def _path(self, tower: Tower, z: torch.Tensor, layer: int, pool_ids: torch.Tensor | None,
              target: torch.Tensor) -> tuple[RawResult, torch.Tensor | None]:
        """The schedule, the path's gradients, f(0) and f(1) from the bottleneck state ``z``; and
        the feature at λ = 1 ``(B, E)`` when the schedule ends there (else None)."""
        def path_at(lam: torch.Tensor, pairs: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:  # probes (completeness schedule)
            return path_values(tower, z, layer, pool_ids, target, lam, self.rows_per_call, pairs)

        lambdas, weights = make_schedule(self.schedule, self.num_steps, path_at)
        path = scaled_path(tower, z, layer, pool_ids, target, lambdas, weights,
                           self.params["rows_per_call"])
        raw = (z * path.grad_sum).sum(dim=-1)
        f0 = objective(tower, z, layer, pool_ids, target, 0.0)
        has_one = float(lambdas[-1]) == 1.0
        f1 = path.values[-1] if has_one else objective(tower, z, layer, pool_ids, target, 1.0)
        result = RawResult(raw=raw, f1=f1, f0=f0, extras={"layer": layer, "nodes": len(lambdas)})
        return result, path.features[-1] if has_one else None
