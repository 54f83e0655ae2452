"""Uncertainty for the results chapters: intervals, paired tests, rank correlations.

Everything is seeded and deterministic. Per-pair metric values are the unit of resampling (the
pairs are the random sample; the methods are fixed).

* :func:`bootstrap_ci` — percentile bootstrap interval of a statistic over pairs;
* :func:`wilson` — Wilson score interval of a proportion (0/100 metrics: Increase, pointing game);
* :func:`interval` — the interval a table prints for one cell (Wilson for 0/100 columns, the
  bootstrap otherwise) with ``n``; :func:`fmt` rounds it to what the interval supports;
* :func:`paired` — NIB against a baseline on the same pairs: the mean difference, its paired
  bootstrap interval, Wilcoxon's signed-rank p, and the verdict "better" / "worse" /
  "not distinguishable at 95 %" (decided by whether the bootstrap interval of the difference
  excludes 0, in the direction that is good for the metric);
* :func:`spearman_ci` — Spearman's ρ with a Fisher-z interval (Bonett & Wright's standard error);
  :func:`rank_agreement_ci` — ρ between our ordering of methods and another (the paper's) with a
  bootstrap interval over our pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as _st

#: Confidence level of every interval.
LEVEL = 0.95
#: Bootstrap resamples.
N_BOOT = 2000
#: The verdict when a paired interval contains 0.
SAME = "not distinguishable at 95 %"


def _values(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} non-finite value(s): every metric must "
                         f"have a defined value per pair (see nibcore.metrics, degenerate maps)")
    return x


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], np.ndarray]
                 | None = None, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
                 ) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``stat`` (default the mean) of ``values`` and its percentile
    bootstrap interval (``n_boot`` resamples of the pairs, generator seeded by ``seed``).

    ``stat`` maps a ``(n_boot, n)`` array to ``(n_boot,)`` (and ``(1, n)`` to ``(1,)``)."""
    _check_level(level)
    x = _values(values)
    if x.size == 0:
        raise ValueError("no values: an interval needs at least one pair")
    stat = stat or (lambda a: a.mean(axis=-1))
    est = float(stat(x[None])[0])
    if x.size == 1:
        return est, float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    boots = stat(x[idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return est, float(lo), float(hi)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float, float]:
    """``(p, low, high)``: the proportion ``k / n`` and its Wilson score interval."""
    _check_level(level)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in 0..n, got k={k}, n={n}")
    z = float(_st.norm.ppf((1 + level) / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges (no rounding residue)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return p, lo, hi


def is_binary(values: np.ndarray, scale: float = 100.0) -> bool:
    """Is every value 0 or ``scale`` (a 0/100 metric: a proportion)?"""
    x = np.asarray(values, dtype=np.float64)
    return bool(x.size and np.isin(x, (0.0, scale)).all())


@dataclass(frozen=True)
class Interval:
    """One printed number: ``value`` with its 95 % interval ``[low, high]`` over ``n`` pairs."""

    value: float
    low: float
    high: float
    n: int
    how: str  # "wilson" or "bootstrap"

    def __str__(self) -> str:
        return fmt(self.value, self.low, self.high)


def interval(values: Sequence[float] | np.ndarray, seed: int = 0, level: float = LEVEL,
             n_boot: int = N_BOOT) -> Interval:
    """The mean of ``values`` with its interval: Wilson for 0/100 columns (reported on the same
    0–100 scale), percentile bootstrap of the mean otherwise."""
    x = _values(values)
    if x.size == 0:
        raise ValueError("no values: an interval needs at least one pair")
    if is_binary(x):
        p, lo, hi = wilson(int((x > 0).sum()), x.size, level)
        return Interval(100 * p, 100 * lo, 100 * hi, int(x.size), "wilson")
    est, lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)
    return Interval(est, lo, hi, int(x.size), "bootstrap")


def decimals(low: float, high: float) -> int:
    """Decimals that show an interval of this width to two significant digits of its half-width
    (never negative; 3 when the width is 0 or undefined)."""
    half = (high - low) / 2
    if not np.isfinite(half) or half <= 0:
        return 3
    return max(0, 1 - int(math.floor(math.log10(half))))


def fmt(value: float, low: float, high: float, n: int | None = None) -> str:
    """``"45.3 [43.0, 47.6]"`` (``", n=1000"`` appended inside when ``n`` is given), rounded
    to what the interval supports (:func:`decimals`)."""
    d = decimals(low, high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{d}f} [–]" + (f" (n={n})" if n is not None else "")
    core = f"{value:.{d}f} [{low:.{d}f}, {high:.{d}f}]"
    return core + (f" (n={n})" if n is not None else "")


@dataclass(frozen=True)
class Paired:
    """A paired comparison of method A with method B on the same ``n`` pairs."""

    diff: float          # mean(A − B)
    low: float           # its paired bootstrap interval
    high: float
    n: int
    p_wilcoxon: float    # two-sided Wilcoxon signed-rank p (NaN when every difference is 0)
    verdict: str         # "better", "worse" or SAME — for A, given the metric's direction


def paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
           lower_is_better: bool = False, seed: int = 0, level: float = LEVEL,
           n_boot: int = N_BOOT) -> Paired:
    """Method A against method B on the same pairs (``a[i]``, ``b[i]`` belong to pair ``i``).

    The verdict is "better" when the paired bootstrap interval of ``mean(a − b)`` lies entirely
    on A's good side of 0 (below 0 when ``lower_is_better``), "worse" when it lies entirely on
    the other side, else "not distinguishable at 95 %". A difference that is 0 for every pair
    is not distinguishable."""
    x, y = _values(a), _values(b)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same pairs: {x.size} vs {y.size} values")
    if x.size < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {x.size}")
    d = x - y
    est, lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level)
    if np.all(d == 0):
        p, lo, hi = float("nan"), 0.0, 0.0
    else:
        p = float(_st.wilcoxon(d, zero_method="zsplit").pvalue)
    good_low, good_high = (hi < 0, lo > 0) if lower_is_better else (lo > 0, hi < 0)
    verdict = "better" if good_low else "worse" if good_high else SAME
    return Paired(est, lo, hi, int(x.size), p, verdict)


def spearman_ci(x: Sequence[float], y: Sequence[float], level: float = LEVEL
                ) -> tuple[float, float, float]:
    """Spearman's ρ of ``x`` and ``y`` with a Fisher-z interval using Bonett & Wright's
    (2000) standard error ``sqrt((1 + ρ²/2) / (n − 3))``; the interval is NaN for n ≤ 3 (and ρ
    is NaN for a constant input)."""
    _check_level(level)
    x, y = _values(x), _values(y)
    if x.size != y.size:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    rho = float(_st.spearmanr(x, y).statistic)
    if x.size <= 3 or abs(rho) >= 1:
        return rho, float("nan"), float("nan")
    z = float(_st.norm.ppf((1 + level) / 2))
    se = math.sqrt((1 + rho * rho / 2) / (x.size - 3))
    c = math.atanh(rho)
    return rho, math.tanh(c - z * se), math.tanh(c + z * se)


def rank_agreement_ci(per_pair: Mapping[str, np.ndarray], reference: Mapping[str, float],
                      seed: int = 0, level: float = LEVEL, n_boot: int = N_BOOT
                      ) -> tuple[float, float, float]:
    """Spearman's ρ between the methods' mean values here (``per_pair``: method -> its per-pair
    values) and a reference ordering (``reference``: method -> value, e.g. the paper's), with a
    percentile bootstrap interval over our pairs (the reference numbers are taken as fixed).
    When every method has the same number of values they are taken as the same pairs and
    resampled together; otherwise each method's pairs are resampled on their own. Methods
    missing from either side are left out; fewer than 3 methods: NaN."""
    methods = [m for m in per_pair if m in reference]
    if len(methods) < 3:
        return float("nan"), float("nan"), float("nan")
    vals = [_values(per_pair[m]) for m in methods]
    if any(v.size == 0 for v in vals):
        raise ValueError("a method without values cannot be ranked")
    ref = np.array([reference[m] for m in methods], dtype=np.float64)
    rho = spearman_ci(np.array([v.mean() for v in vals]), ref)[0]
    rng = np.random.default_rng(seed)
    if len({v.size for v in vals}) == 1:
        mat = np.stack(vals)
        idx = rng.integers(0, mat.shape[1], size=(n_boot, mat.shape[1]))
        means = mat[:, idx].mean(axis=2).T  # (n_boot, methods)
    else:
        means = np.stack([v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
                          for v in vals], axis=1)
    ref_rank = _st.rankdata(ref)
    r = _st.rankdata(means, axis=1)
    rc = r - r.mean(axis=1, keepdims=True)
    fc = ref_rank - ref_rank.mean()
    denom = np.sqrt((rc ** 2).sum(axis=1) * (fc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = (rc * fc).sum(axis=1) / denom
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return rho, float("nan"), float("nan")
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return rho, float(lo), float(hi)
