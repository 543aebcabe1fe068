"""Paired, seeded statistics over per-query differences, shared by gates and report comparisons.

Every function is pure: the same inputs and seed give the same numbers, so a gate's verdict
never flips between two calls on the same files.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from harness.metrics.bootstrap import bootstrap_mean_ci

Alternative = Literal["less", "greater", "two-sided"]
N_RESAMPLES = 9999
EXACT_TOLERANCE = 1e-12  # a mean drop this close to the margin is at the margin (float noise)
BATCH_VALUES = 1 << 20  # values of the null distribution scipy computes at once


def sign_flip_pvalue(
    values: np.ndarray,
    *,
    alternative: Alternative,
    seed: int,
    n_resamples: int = N_RESAMPLES,
) -> float:
    """p-value of a sign-flip permutation test of "the values are symmetric about 0".

    This is the paired permutation test: ``values`` are per-query differences, and under the
    null each difference is as likely to have the opposite sign. scipy enumerates all 2**n
    sign patterns when that is at most ``n_resamples`` (exact) and samples otherwise, seeded.
    NaNs are dropped; no values at all gives p = 1 (no evidence of anything).
    """
    from scipy.stats import permutation_test

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0 or not np.any(v):
        return 1.0
    if v.size == 1:  # two sign patterns; scipy wants two or more values
        one_sided = {"less": v[0] < 0, "greater": v[0] > 0}.get(alternative, False)
        return 0.5 if one_sided else 1.0
    # scipy >= 1.15 names the generator ``rng``; older releases only know ``random_state``.
    keyword = "rng" if "rng" in inspect.signature(permutation_test).parameters else "random_state"
    result = permutation_test(
        (v,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative=alternative,
        # A block of sign patterns at a time (scipy draws them in the same stream, so the
        # p-value is the same): 9,999 x 20,000 queries at once would be 1.6 GB per array.
        batch=max(1, BATCH_VALUES // v.size),
        **{keyword: np.random.default_rng(seed)},
    )
    return float(min(1.0, result.pvalue))


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def paired_difference_ci(
    diff: np.ndarray, *, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of per-query differences: a seeded percentile bootstrap over queries."""
    return bootstrap_mean_ci(np.asarray(diff, dtype=np.float64), seed=seed, confidence=confidence)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Reject hypothesis i at family-wise level alpha exactly when ``holm(p)[i] < alpha``; it
    controls the chance of any false alarm across the family without assuming independence.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m)
    out[order] = adjusted
    return out


def win_tie_loss(diff: np.ndarray, *, tolerance: float = 1e-9) -> tuple[int, int, int]:
    """Counts of differences above +tolerance, within it, and below -tolerance (NaNs skipped)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[~np.isnan(d)]
    return (
        int(np.sum(d > tolerance)),
        int(np.sum(np.abs(d) <= tolerance)),
        int(np.sum(d < -tolerance)),
    )


def detectable_drop(diff: np.ndarray, *, margin: float, alpha: float, power: float = 0.8) -> float:
    """The smallest true mean drop a one-sided paired test at level ``alpha`` would find with
    probability ``power``, given the spread of these per-query differences (normal
    approximation: margin + (z_(1-alpha) + z_power) * sd / sqrt(n)).

    ``inf`` when no outcome can be significant: with n queries the smallest sign-flip p-value
    is 2**-n (5 queries: 1/32), so below log2(1/alpha) queries only a hard floor can fail.
    """
    from scipy.stats import norm

    d = np.asarray(diff, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0 or 2.0**-n >= alpha:
        return float("inf")
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    return float(margin + (norm.ppf(1 - alpha) + norm.ppf(power)) * sd / np.sqrt(n))


@dataclass(frozen=True)
class OrderNoiseTest:
    """One metric's order-noise test: one-sided p, the standard error of the mean difference
    that the orders alone make, and the t distribution's degrees of freedom."""

    p: float
    se: float
    df: float


def order_noise_test(
    diff: np.ndarray,
    spread_new: np.ndarray,
    spread_base: np.ndarray,
    *,
    orders: int | np.ndarray,
    margin: float,
) -> OrderNoiseTest:
    """Test of "on these queries the mean drop is at most ``margin``" against the noise that
    drawing ``orders`` random orders per query makes (one-sided; ``diff`` negative = worse).

    Why: the sign-flip test takes the queries as its noise, so a drop confined to a few
    queries (most differences 0) cannot be significant however certain each one is. Here a
    query's difference is weighed against its own spread across orders (``spread_*``: the
    population standard deviations over the P orders, e.g. ``ndcg@10_std``; ``orders`` is P,
    or each query's P where they differ: adaptive sampling). Whatever the correlation of two
    rerankers' answers to the same orders, sd(mean_new - mean_base) <=
    (sd_new + sd_base) / sqrt(P), estimated as se_q = (s_new + s_base) / sqrt(P - 1); so
    T = (mean(d) + margin) / (sqrt(sum se_q^2) / n), Student t with Welch-Satterthwaite
    degrees of freedom (P - 1 per query: a few noisy queries give few). With no spread at all
    (a deterministic reranker) the mean difference is exact: p = 0 beyond the margin, else 1.
    """
    from scipy.stats import t

    per_query = np.asarray(orders, dtype=np.float64)
    if per_query.size and per_query.min() < 2:
        raise ValueError(
            f"the order-noise test needs 2 or more orders per query, got {int(per_query.min())}"
        )
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return OrderNoiseTest(1.0, math.nan, math.nan)
    variances = (np.asarray(spread_new) + np.asarray(spread_base)) ** 2 / (per_query - 1)
    total = float(variances.sum())
    shifted = float(d.mean()) + margin
    if not total > 0:
        return OrderNoiseTest(0.0 if shifted < -EXACT_TOLERANCE else 1.0, 0.0, math.inf)
    se = math.sqrt(total) / d.size
    df = total**2 / float(np.sum(variances**2 / (per_query - 1)))
    return OrderNoiseTest(float(t.cdf(shifted / se, df)), se, df)


def order_noise_detectable(
    test: OrderNoiseTest, *, margin: float, alpha: float, power: float = 0.8
) -> float:
    """The true mean drop the order-noise test finds with probability ``power`` at level
    ``alpha``: margin + (t_(1-alpha) + t_power) * se; the margin itself without noise (then
    any drop beyond it is certain), ``inf`` with no queries."""
    from scipy.stats import t

    if math.isnan(test.se):
        return math.inf
    if test.se == 0:
        return margin
    return float(margin + (t.ppf(1 - alpha, test.df) + t.ppf(power, test.df)) * test.se)
