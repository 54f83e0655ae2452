"""Quadrature schedules for NIB's path integral over the bottleneck scale λ ∈ [0, 1].

A schedule turns ``num_steps`` into points ``lambdas`` ``(S,)`` and weights ``weights`` ``(S,)``
so that ``∫_0^1 g(λ) dλ ≈ Σ_s weights[s] · g(lambdas[s])``.

* ``"paper"`` — what the paper's code computes: λ_i = i/n, i = 1..n, weights 1/n (a right
  Riemann sum; λ = 0 is never evaluated).
* ``"completeness"`` — ours: Gauss–Legendre in log10 λ, ``num_steps`` nodes on each decade from
  10^-``decades`` to 1. LayerNorm makes the network almost scale-invariant in λ, so f(λ) changes
  little on [0.1, 1] and jumps to f(0) only where λ·‖z‖ meets the LayerNorm epsilon (around
  1e-3..1e-5 on trained models). Log-spaced nodes resolve that jump; the uniform grid never samples
  it. The piece [0, 10^-decades] is left out: it is f(10^-decades) − f(0).

  How deep to go is decided per call (:func:`completeness_decades`): f is evaluated, forward only,
  at λ = 1, 0 and 10^-d for d in :data:`DEPTHS`, and ``decades`` is the smallest d from which on
  every deeper probe agrees with f(0) to ``TOLERANCE · |f(1) − f(0)|``, for every pair of the
  batch. Trained models (non-zero LayerNorm biases) stop at 8 decades, today's range. On a model
  whose LayerNorm biases are zero (randomly initialised open_clip or Hugging Face models) the
  state that reaches the head shrinks linearly with λ once every LayerNorm works below its
  epsilon; the cosine stays at its λ → 0⁺ limit until the feature norm meets the cosine's own
  epsilon (1e-8), far below 10^-8, and only there falls to f(0) — so the range must extend, and
  the probes show how far. Cost: one forward call of ``(2 + len(DEPTHS)) · B`` rows without
  gradients, plus ``num_steps`` quadrature rows per extra decade.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .checks import check_positive_int

Schedule = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def paper(num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right Riemann sum: λ_i = i/n, weights 1/n."""
    lambdas = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
    return lambdas, torch.full_like(lambdas, 1.0 / num_steps)


def completeness(num_steps: int, decades: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre in u = log10 λ: ``num_steps`` nodes per decade on [10^-decades, 1]."""
    nodes, gl_weights = np.polynomial.legendre.leggauss(num_steps)  # on [-1, 1]
    us, ws = [], []
    for k in range(decades):  # decade [-(k+1), -k] in u
        centre = -k - 0.5
        us.append(centre + 0.5 * nodes)
        ws.append(0.5 * gl_weights)
    u = torch.tensor(np.concatenate(us), dtype=torch.float64)
    lambdas = 10.0 ** u
    weights = torch.tensor(np.concatenate(ws), dtype=torch.float64) * lambdas * math.log(10.0)
    order = torch.argsort(lambdas)
    return lambdas[order], weights[order]


#: Available schedules, name -> function(num_steps) -> (lambdas, weights).
SCHEDULES: dict[str, Schedule] = {"paper": paper, "completeness": completeness}

#: decades below λ = 1 that :func:`completeness_decades` probes (the first is the fixed range)
DEPTHS: tuple[int, ...] = tuple(range(8, 37, 2))
#: agreement of f(10^-d) with f(0), relative to |f(1) − f(0)|, that ends the range
TOLERANCE = 1e-4


def completeness_decades(values_at: Callable[[torch.Tensor], torch.Tensor],
                         tolerance: float = TOLERANCE,
                         depths: Sequence[int] = DEPTHS) -> int:
    """How many decades the completeness schedule must span for a batch.

    ``values_at(lambdas)``: f(λ z) for ``lambdas`` ``(K,)`` (float64), returned as ``(K, B)``.
    Called once with ``[1, 0, 10^-d for d in depths]``. Returns the smallest ``d`` such that
    ``|f(10^-d') − f(0)| <= tolerance · |f(1) − f(0)|`` for ``d`` and every deeper probe ``d'``,
    for every pair; the deepest probe when none qualifies (the reported gap then shows it).
    """
    lambdas = torch.tensor([1.0, 0.0] + [10.0 ** -d for d in depths], dtype=torch.float64)
    values = values_at(lambdas).double()
    f1, f0, probes = values[0], values[1], values[2:]
    scale = (f1 - f0).abs()
    agree = ((probes - f0).abs() <= tolerance * scale).all(dim=1).tolist()
    for k, depth in enumerate(depths):
        if all(agree[k:]):
            return int(depth)
    return int(depths[-1])


def make_schedule(name: str, num_steps: int,
                  values_at: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights ``(S,)`` of a registered schedule, with validated arguments.

    ``values_at``: f along the path (see :func:`completeness_decades`); given, the
    ``"completeness"`` schedule spans as many decades as the batch needs (other schedules ignore
    it); without it, :func:`completeness` keeps its fixed 8 decades.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    check_positive_int("num_steps", num_steps)
    if name == "completeness" and values_at is not None:
        return completeness(num_steps, decades=completeness_decades(values_at))
    return SCHEDULES[name](num_steps)
