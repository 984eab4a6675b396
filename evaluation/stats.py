"""Intervals and tests for accuracy numbers, with no dependency beyond the standard library and
the Wilson interval of gateway/preference.py.

    wilson_interval(8, 10)                      # (0.4902, 0.9433): 95% score interval for 8/10
    compare_paired([True, False, ...], [...])   # A - B on the same items: Newcombe interval, McNemar
    pass_at_k(n=10, c=3, k=5)                   # unbiased pass@k (Chen et al., 2021)
    bootstrap_mean_interval(values, seed=0)     # percentile bootstrap for a mean of per-item scores

Why these: Wilson's interval keeps its coverage at small n and near 0% or 100%, where the
textbook p +/- 1.96 SE interval collapses to a point (0/20 -> [0, 0]). Both models answer the
same items, so their difference is a paired comparison: Newcombe's method 10 (a hybrid score
interval that accounts for the correlation) for the interval, and McNemar's test, which looks
only at the items where the two models disagree, for the p-value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

from gateway import preference


def z_value(confidence: float = 0.95) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data. The one
    formula is gateway/preference.py's (the vote tallies use it too)."""
    interval = preference.wilson_interval(successes, n, z=z_value(confidence))
    return interval.low, interval.high


def bootstrap_mean_interval(
    values: Sequence[float], confidence: float = 0.95, *, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-item values (seeded, so reproducible)."""
    if not values:
        return 0.0, 1.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    low_index = math.floor((1 - confidence) / 2 * resamples)
    high_index = min(resamples - 1, math.ceil((1 + confidence) / 2 * resamples) - 1)
    return means[low_index], means[high_index]


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    smaller = min(only_a, only_b)
    tail: float = sum(math.comb(discordant, i) for i in range(smaller + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def mcnemar_chi2(only_a: int, only_b: int, *, continuity: bool = True) -> tuple[float, float]:
    """McNemar's chi-square statistic (1 df) and its p-value; Edwards' continuity correction by default."""
    discordant = only_a + only_b
    if discordant == 0:
        return 0.0, 1.0
    difference = float(abs(only_a - only_b))
    if continuity:
        difference = max(0.0, difference - 1)
    statistic = difference * difference / discordant
    return statistic, math.erfc(math.sqrt(statistic / 2))  # survival function of chi2 with 1 df


@dataclass(frozen=True)
class PairedComparison:
    n: int  # items both models answered
    both: int
    only_a: int
    only_b: int
    neither: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    low: float
    high: float
    mcnemar_exact_p: float
    mcnemar_chi2: float
    mcnemar_chi2_p: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def compare_paired(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> PairedComparison:
    """Paired difference A - B with Newcombe's (1998) method 10 interval and McNemar's test."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    neither = len(a) - both - only_a - only_b
    low, high = newcombe_paired_interval(both, only_a, only_b, neither, confidence)
    n = len(a)
    chi2, chi2_p = mcnemar_chi2(only_a, only_b)
    return PairedComparison(
        n=n,
        both=both,
        only_a=only_a,
        only_b=only_b,
        neither=neither,
        accuracy_a=(both + only_a) / n if n else 0.0,
        accuracy_b=(both + only_b) / n if n else 0.0,
        difference=(only_a - only_b) / n if n else 0.0,
        low=low,
        high=high,
        mcnemar_exact_p=mcnemar_exact_p(only_a, only_b),
        mcnemar_chi2=chi2,
        mcnemar_chi2_p=chi2_p,
    )


def newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for p_A - p_B from a paired 2x2 table (Newcombe 1998, Stat Med 17:2635, method 10).

    Combines the Wilson intervals of the two marginal proportions, corrected by the phi
    correlation between them (with Newcombe's continuity adjustment of its numerator).
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return -1.0, 1.0
    successes_a, successes_b = both + only_a, both + only_b
    p_a, p_b = successes_a / n, successes_b / n
    l_a, u_a = wilson_interval(successes_a, n, confidence)
    l_b, u_b = wilson_interval(successes_b, n, confidence)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - only_a * only_b
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    d = p_a - p_b
    lower = d - math.sqrt(max(0.0, (p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2))
    upper = d + math.sqrt(max(0.0, (u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples out of n (c of them correct) passes; unbiased."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per item, got {n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) as a product, which stays accurate for large n.
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1 - k / i
    return 1 - product
