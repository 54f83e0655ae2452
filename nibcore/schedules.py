"""Quadrature schedules for NIB's path integral over the bottleneck scale λ ∈ [0, 1].

A schedule turns ``num_steps`` into points ``lambdas`` ``(S,)`` and weights ``weights`` ``(S,)``
so that ``∫_0^1 g(λ) dλ ≈ Σ_s weights[s] · g(lambdas[s])``.

* ``"paper"`` — what the paper's code computes: λ_i = i/n, i = 1..n, weights 1/n (a right
  Riemann sum; λ = 0 is never evaluated).
* ``"completeness"`` — ours: Gauss–Legendre in log10 λ, ``num_steps`` nodes on each decade from
  10^-``decades`` to 1. LayerNorm makes the network almost scale-invariant in λ, so f(λ) changes
  little on [0.1, 1] and jumps to f(0) only where λ·‖z‖ meets the LayerNorm epsilon (around
  1e-3..1e-5 on trained models). Log-spaced nodes resolve that jump; the uniform grid never samples
  it. The piece [0, 10^-decades] is left out: it is f(10^-decades) − f(0), negligible once the state
  is far below the LayerNorm epsilon (trained models, whose LayerNorm biases are non-zero); the
  completeness gap reported with every attribution shows whether that holds.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .attribution import check_positive_int

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


def make_schedule(name: str, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights ``(S,)`` of a registered schedule, with validated arguments."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    check_positive_int("num_steps", num_steps)
    return SCHEDULES[name](num_steps)
