"""Intervals, paired verdicts and rank correlations (nibcore.stats)."""

import math

import numpy as np
import pytest
from scipy import stats as st

from nibcore.stats import (SAME, bootstrap_ci, decimals, fmt, interval, is_binary, paired,
                           rank_agreement_ci, spearman_ci, wilson)


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(0).normal(5.0, 2.0, size=400)
    a = bootstrap_ci(x, seed=1)
    assert a == bootstrap_ci(x, seed=1)  # deterministic
    assert a != bootstrap_ci(x, seed=2)
    est, lo, hi = a
    assert est == pytest.approx(x.mean())
    assert lo < est < hi
    se = x.std(ddof=1) / math.sqrt(x.size)  # close to the normal-theory interval
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])


def test_wilson_matches_the_formula_and_edges():
    p, lo, hi = wilson(30, 100)
    z = 1.959963984540054
    centre = (0.3 + z * z / 200) / (1 + z * z / 100)
    half = z * math.sqrt(0.3 * 0.7 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert wilson(0, 10)[1] == 0.0 and wilson(0, 10)[2] > 0.2  # not a zero-width interval
    assert wilson(10, 10)[2] == 1.0
    with pytest.raises(ValueError, match="k must"):
        wilson(11, 10)


def test_interval_chooses_wilson_for_0_100_columns():
    x = np.array([0.0, 100.0] * 50)
    iv = interval(x)
    assert is_binary(x) and iv.how == "wilson" and iv.n == 100 and iv.value == 50.0
    assert iv.low == pytest.approx(100 * wilson(50, 100)[1])
    y = np.linspace(0, 1, 50)
    assert interval(y).how == "bootstrap"


def test_fmt_rounds_to_the_interval():
    assert decimals(43.0, 47.6) == 1
    assert fmt(45.2913, 43.04, 47.61) == "45.3 [43.0, 47.6]"
    assert fmt(0.012346, 0.0121, 0.0126) == "0.01235 [0.01210, 0.01260]"
    assert fmt(1.0, 0.5, 1.5, n=12) == "1.00 [0.50, 1.50] (n=12)"


def test_paired_verdicts():
    rng = np.random.default_rng(0)
    base = rng.normal(10, 3, size=300)
    better = base - 1.0 + rng.normal(0, 0.5, size=300)  # lower is better: A lower than B
    r = paired(better, base, lower_is_better=True)
    assert r.verdict == "better" and r.high < 0 and r.diff == pytest.approx(-1.0, abs=0.1)
    assert paired(better, base, lower_is_better=False).verdict == "worse"
    same = base + rng.normal(0, 0.5, size=300)
    assert paired(same - same.mean() + base.mean(), base).verdict == SAME
    # Wilcoxon's p agrees with scipy's
    assert r.p_wilcoxon == pytest.approx(st.wilcoxon(better - base, zero_method="zsplit").pvalue)
    eq = paired(base, base)
    assert eq.verdict == SAME and eq.diff == 0 and math.isnan(eq.p_wilcoxon)
    with pytest.raises(ValueError, match="same pairs"):
        paired(base, base[:-1])


def test_spearman_ci():
    x = np.arange(20.0)
    y = x + np.random.default_rng(0).normal(0, 4, size=20)
    rho, lo, hi = spearman_ci(x, y)
    assert rho == pytest.approx(st.spearmanr(x, y).statistic)
    assert -1 < lo < rho < hi < 1
    assert math.isnan(spearman_ci([1, 2, 3], [3, 2, 1])[1])  # n <= 3: no interval
    assert math.isnan(spearman_ci([1, 1, 1, 1], [1, 2, 3, 4])[0])


def test_rank_agreement_ci_widens_with_noise():
    rng = np.random.default_rng(0)
    ref = {m: float(i) for i, m in enumerate("abcdef")}
    clear = {m: ref[m] + rng.normal(0, 0.1, size=200) for m in ref}
    noisy = {m: ref[m] + rng.normal(0, 30, size=200) for m in ref}
    rho, lo, hi = rank_agreement_ci(clear, ref, seed=0)
    assert rho == 1.0 and lo == 1.0
    rho2, lo2, hi2 = rank_agreement_ci(noisy, ref, seed=0)
    assert hi2 - lo2 > 0.5
    assert rank_agreement_ci(noisy, ref, seed=0) == (rho2, lo2, hi2)
    assert math.isnan(rank_agreement_ci({"a": clear["a"]}, ref)[0])


def test_rank_agreement_ci_with_unequal_pair_counts():
    rng = np.random.default_rng(1)
    ref = {m: float(i) for i, m in enumerate("abcd")}
    vals = {m: ref[m] + rng.normal(0, 1, size=50 if m == "a" else 300) for m in ref}
    rho, lo, hi = rank_agreement_ci(vals, ref, seed=0)
    assert rho == 1.0 and lo <= hi <= 1.0
    assert rank_agreement_ci(vals, ref, seed=0) == (rho, lo, hi)
