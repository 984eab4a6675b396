"""The report's statistics beyond what evaluation/stats.py and gateway/preference.py provide:
paired ratios over measured conditions, verdicts, and how much more data would settle a gap.

    ratio = paired_ratio([530, 388, 162], [368, 360, 170])   # geometric mean cand/inc, t interval
    verdict(ratio.log_low, ratio.log_high, null=0.0) # "higher" | "lower" | None (no detectable difference)
    mcnemar_items_needed(only_a=6, only_b=2, n=40)   # items for 80% power at the observed gap
    votes_needed(0.62)                               # decisive votes to tell 62% from 50%

Power: two-sided 5% tests at 80% power, from normal approximations (Connor 1987 for McNemar);
they say "roughly how many", which is all a reader needs to plan the next run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev

ALPHA = 0.05
POWER = 0.80
Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.96
Z_BETA = NormalDist().inv_cdf(POWER)  # 0.84

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_975(df: int) -> float:
    """Student's t 97.5% quantile; beyond 30 df the Cornish-Fisher expansion (error < 0.001)."""
    if df < 1:
        raise ValueError("need at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z_ALPHA
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


@dataclass(frozen=True)
class PairedRatio:
    """Candidate / incumbent over paired conditions: geometric mean ratio and a 95% t interval."""

    n: int  # paired conditions
    ratio: float
    low: float | None  # None with fewer than two conditions
    high: float | None
    log_mean: float
    log_sd: float | None

    @property
    def log_low(self) -> float | None:
        return None if self.low is None else math.log(self.low)

    @property
    def log_high(self) -> float | None:
        return None if self.high is None else math.log(self.high)


def paired_ratio(candidate: Sequence[float], incumbent: Sequence[float]) -> PairedRatio | None:
    """Paired t interval on log(candidate / incumbent); None without a positive pair."""
    logs = [math.log(c / i) for c, i in zip(candidate, incumbent, strict=True) if c > 0 and i > 0]
    if not logs:
        return None
    mean = fmean(logs)
    if len(logs) < 2:
        return PairedRatio(1, math.exp(mean), None, None, mean, None)
    sd = stdev(logs)
    half = t_975(len(logs) - 1) * sd / math.sqrt(len(logs))
    return PairedRatio(len(logs), math.exp(mean), math.exp(mean - half), math.exp(mean + half), mean, sd)


def verdict(low: float | None, high: float | None, *, null: float) -> str | None:
    """ "higher" when the interval lies above `null`, "lower" when below, None when it covers it
    (or there is no interval): no detectable difference."""
    if low is None or high is None:
        return None
    if low > null:
        return "higher"
    if high < null:
        return "lower"
    return None


def mcnemar_items_needed(only_a: int, only_b: int, n: int) -> int | None:
    """Items for McNemar's test to detect the observed paired gap (Connor 1987); None when the
    observed gap is zero (no sample size resolves it)."""
    if n <= 0 or only_a == only_b:
        return None
    p10, p01 = only_a / n, only_b / n
    discordant, gap = p10 + p01, p10 - p01
    root = Z_ALPHA * math.sqrt(discordant) + Z_BETA * math.sqrt(max(0.0, discordant - gap * gap))
    return math.ceil(root * root / (gap * gap))


def votes_needed(rate: float) -> int | None:
    """Decisive votes for a test of `rate` against 50% to reach 80% power; None at exactly 50%."""
    gap = rate - 0.5
    if abs(gap) < 1e-12:
        return None
    root = Z_ALPHA * 0.5 + Z_BETA * math.sqrt(max(rate * (1 - rate), 1e-12))
    return math.ceil(root * root / (gap * gap))


def paired_conditions_needed(log_mean: float, log_sd: float | None) -> int | None:
    """Paired measurements for a t test of the observed mean log ratio (normal approximation)."""
    if log_sd is None or abs(log_mean) < 1e-12:
        return None
    return max(2, math.ceil(((Z_ALPHA + Z_BETA) * log_sd / abs(log_mean)) ** 2))


def scale_needed(estimate: float, standard_error: float) -> float | None:
    """By what factor the sample must grow (standard error ~ 1/sqrt(n)) for 80% power at the
    observed estimate; None when the estimate is zero."""
    if abs(estimate) < 1e-12 or standard_error <= 0:
        return None
    return ((Z_ALPHA + Z_BETA) * standard_error / abs(estimate)) ** 2
