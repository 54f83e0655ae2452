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

  Where a pair's feature norm crosses that epsilon (λ*), f turns from a cosine (flat in λ on such
  a model) into ‖feature‖ · cos / eps (∝ λ^k): d f / d ln λ jumps there, and Gauss–Legendre on
  the decade holding λ* converges only like O(1/n) (gaps of 1e-2 on ViT-B/32 with all biases
  zero). The probes' feature norms bracket λ*; a few forward rows (:func:`locate_kinks`) place it
  and that decade is split at λ*, ``num_steps`` nodes on each piece (:func:`completeness`), so
  every piece has a smooth integrand. It is the only kink on the path: LayerNorm (ε under the
  square root), softmax, GELU / QuickGELU and the attention pools are smooth in λ; the norm
  itself is not at a zero feature, which only λ = 0 gives. (A ReLU MLP would kink wherever a unit
  changes sign; CLIP and SigLIP towers use GELU or QuickGELU.) Without a crossing in range
  (trained models, biases non-zero) nothing more is evaluated and the nodes are the plain
  decades', bit for bit. The breaks of a batch are shared: each pair with a crossing adds
  ``num_steps`` nodes for all.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .base import COSINE_EPS
from .checks import check_positive_int

Schedule = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def paper(num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right Riemann sum: λ_i = i/n, weights 1/n."""
    lambdas = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
    return lambdas, torch.full_like(lambdas, 1.0 / num_steps)


def completeness(num_steps: int, decades: int = 8,
                 breaks: Sequence[float] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre in u = log10 λ: ``num_steps`` nodes per decade on [10^-decades, 1].

    ``breaks``: values of λ where d f / d ln λ jumps (see :func:`locate_kinks`); a decade that
    holds one is split there, with ``num_steps`` nodes on each piece, so that every piece has a
    smooth integrand. Without breaks the nodes are those of the plain decades, bit for bit.
    """
    nodes, gl_weights = np.polynomial.legendre.leggauss(num_steps)  # on [-1, 1]
    cuts = sorted({math.log10(b) for b in breaks if 10.0 ** -decades < b < 1.0})
    us, ws = [], []
    for k in range(decades):  # decade [-(k+1), -k] in u
        inner = [c for c in cuts if -k - 1 + BREAK_MARGIN < c < -k - BREAK_MARGIN]
        if not inner:
            centre = -k - 0.5
            us.append(centre + 0.5 * nodes)
            ws.append(0.5 * gl_weights)
            continue
        edges = [-k - 1.0] + inner + [-k + 0.0]
        for lo, hi in zip(edges[:-1], edges[1:]):
            half = 0.5 * (hi - lo)
            us.append(0.5 * (lo + hi) + half * nodes)
            ws.append(half * gl_weights)
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
#: feature norm at which the cosine's clamp starts (:data:`~nibcore.attribution.COSINE_EPS`):
#: where ‖feature(λ z)‖ crosses it, f turns from a cosine into ‖feature‖ · cos / eps, and
#: d f / d ln λ jumps by (d ln‖feature‖ / d ln λ) · f
KINK_NORM = COSINE_EPS
#: a kink is located to |ln(‖feature‖ / KINK_NORM)| <= this; the quadrature error the leftover
#: offset leaves is about this times |f| at the kink
KINK_TOLERANCE = 1e-6
#: most refinement rounds of :func:`locate_kinks` (each: one forward row per unresolved kink)
KINK_ROUNDS = 40
#: breaks closer than this (in decades) to a decade's edge do not split it
BREAK_MARGIN = 1e-9

#: ``path_at(lambdas)``: f(λ z) and ‖feature(λ z)‖ for ``lambdas`` ``(K,)`` and every pair, two
#: ``(K, B)``; ``path_at(lambdas, pairs)``: row k is pair ``pairs[k]`` at ``lambdas[k]``, two
#: ``(K,)``. Forward only.
PathProbe = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def probe_points(depths: Sequence[int] = DEPTHS) -> torch.Tensor:
    """The probed λ ``(2 + len(depths),)``: 1, 0 and 10^-d for d in ``depths`` (float64)."""
    return torch.tensor([1.0, 0.0] + [10.0 ** -d for d in depths], dtype=torch.float64)


def completeness_decades(values: torch.Tensor, tolerance: float = TOLERANCE,
                         depths: Sequence[int] = DEPTHS) -> int:
    """How many decades the completeness schedule must span for a batch.

    ``values`` ``(2 + len(depths), B)``: f at :func:`probe_points` for every pair. Returns the
    smallest ``d`` such that ``|f(10^-d') − f(0)| <= tolerance · |f(1) − f(0)|`` for ``d`` and
    every deeper probe ``d'``, for every pair; the deepest probe when none qualifies (the
    reported gap then shows it).
    """
    values = values.double()
    f1, f0, probes = values[0], values[1], values[2:]
    scale = (f1 - f0).abs()
    agree = ((probes - f0).abs() <= tolerance * scale).all(dim=1).tolist()
    for k, depth in enumerate(depths):
        if all(agree[k:]):
            return int(depth)
    return int(depths[-1])


def kink_brackets(norms: torch.Tensor, decades: int, depths: Sequence[int] = DEPTHS,
                  ) -> list[tuple[int, float, float, float, float]]:
    """``(pair, λ_hi, λ_lo, norm_hi, norm_lo)`` for consecutive probes in [10^-decades, 1]
    (λ = 1, 10^-d) between which the pair's feature norm crosses :data:`KINK_NORM`.

    ``norms`` ``(2 + len(depths), B)``: feature norms at :func:`probe_points`. On models whose
    features stay away from zero (trained models) there is none, and nothing more is evaluated.
    """
    rows = [0] + [2 + k for k, d in enumerate(depths) if d <= decades]
    lams, norms = probe_points(depths)[rows], norms.detach().double().cpu()[rows]  # (R,), (R, B)
    above = norms > KINK_NORM
    change = (above[:-1] != above[1:]).nonzero().tolist()
    return [(pair, float(lams[r]), float(lams[r + 1]), float(norms[r, pair]),
             float(norms[r + 1, pair])) for r, pair in change]


def locate_kinks(path_at: PathProbe,
                 brackets: Sequence[tuple[int, float, float, float, float]]) -> list[float]:
    """λ* in each bracket where the pair's feature norm meets :data:`KINK_NORM`.

    Regula falsi with the Illinois modification on g(t) = ln‖feature(e^t z)‖ − ln KINK_NORM,
    t = ln λ (nearly linear in t near a kink: the network is close to homogeneous there), every
    unresolved bracket refined in the same forward call. Stops when |g| <= :data:`KINK_TOLERANCE`
    or after :data:`KINK_ROUNDS` rounds (then the current estimate; the reported gap shows it).
    """
    if not brackets:
        return []
    log_eps = math.log(KINK_NORM)

    def column(i: int) -> torch.Tensor:
        return torch.tensor([b[i] for b in brackets], dtype=torch.float64)

    def log_gap(norms: torch.Tensor) -> torch.Tensor:  # g; an exact zero norm counts as -inf
        return norms.detach().double().cpu().log() - log_eps

    pairs = torch.tensor([b[0] for b in brackets])
    hi_t, lo_t = column(1).log(), column(2).log()
    hi_g, lo_g = log_gap(column(3)), log_gap(column(4))
    best_t = torch.where(lo_g.abs() < hi_g.abs(), lo_t, hi_t)
    done = torch.minimum(lo_g.abs(), hi_g.abs()) <= KINK_TOLERANCE
    side = torch.zeros(len(brackets), dtype=torch.int8)  # last endpoint kept: -1 lo, +1 hi
    for _ in range(KINK_ROUNDS):
        live = (~done).nonzero().flatten()
        if live.numel() == 0:
            break
        a, b, ga, gb = lo_t[live], hi_t[live], lo_g[live], hi_g[live]
        t = (a * gb - b * ga) / (gb - ga)
        t = torch.where(torch.isfinite(t) & (t > a) & (t < b), t, 0.5 * (a + b))
        gt = log_gap(path_at(t.exp(), pairs[live])[1])
        best_t[live] = t
        done[live] = gt.abs() <= KINK_TOLERANCE
        same_as_lo = (gt > 0) == (ga > 0)
        # Illinois: halve the g of the endpoint kept twice in a row, so it cannot stall
        keep_hi_again = same_as_lo & (side[live] == 1)
        keep_lo_again = ~same_as_lo & (side[live] == -1)
        hi_g[live] = torch.where(keep_hi_again, 0.5 * gb, gb)
        lo_g[live] = torch.where(keep_lo_again, 0.5 * ga, ga)
        lo_t[live] = torch.where(same_as_lo, t, a)
        lo_g[live] = torch.where(same_as_lo, gt, lo_g[live])
        hi_t[live] = torch.where(same_as_lo, b, t)
        hi_g[live] = torch.where(same_as_lo, hi_g[live], gt)
        side[live] = torch.where(same_as_lo, 1, -1).to(torch.int8)
    return best_t.exp().tolist()


def make_schedule(name: str, num_steps: int, path_at: PathProbe | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights ``(S,)`` of a registered schedule, with validated arguments.

    ``path_at``: f and the feature norm along the path (see :data:`PathProbe`); given, the
    ``"completeness"`` schedule spans as many decades as the batch needs and splits the decades
    where a pair's feature norm crosses the cosine's clamp (other schedules ignore it); without
    it, :func:`completeness` keeps its fixed 8 decades.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    check_positive_int("num_steps", num_steps)
    if name == "completeness" and path_at is not None:
        values, norms = path_at(probe_points())
        decades = completeness_decades(values)
        breaks = locate_kinks(path_at, kink_brackets(norms, decades))
        return completeness(num_steps, decades=decades, breaks=breaks)
    return SCHEDULES[name](num_steps)
