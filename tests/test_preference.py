"""gateway/preference.py: win rates with Wilson intervals and the length-controlled logistic fit,
checked against closed forms and against statsmodels' Logit on a fixed data set."""

from __future__ import annotations

import math

import pytest

from gateway.preference import (
    MIN_DECISIVE,
    Judgement,
    fit_logistic,
    length_controlled,
    pair_preferences,
    wilson_interval,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(7, 10).low == pytest.approx(0.3968, abs=1e-4)
    assert wilson_interval(7, 10).high == pytest.approx(0.8922, abs=1e-4)
    assert wilson_interval(0, 5).low == 0.0 and wilson_interval(5, 5).high == 1.0
    assert wilson_interval(0, 0) == wilson_interval(0, 0).__class__(0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_pairs_count_sides_ties_and_both_bad_separately() -> None:
    judgements = [
        Judgement("r1", "qwen", "a", 10, 5),  # r1 on the left wins
        Judgement("qwen", "r1", "b", 5, 10),  # r1 on the right wins
        Judgement("qwen", "r1", "a", 5, 10),  # qwen wins
        Judgement("r1", "qwen", "tie", 1, 1),
        Judgement("r1", "qwen", "both_bad", 1, 1),
        Judgement("r1", "other", "a", 1, 1),
    ]
    first, second = pair_preferences(judgements)
    assert first.models == ("qwen", "r1") and second.models == ("other", "r1")
    assert (first.votes, first.wins, first.ties, first.both_bad, first.decisive) == (5, {"qwen": 1, "r1": 2}, 1, 1, 3)
    # qwen's share of the 3 decisive votes, not of all 5: ties stay out of the denominator.
    assert first.win_rate == wilson_interval(1, 3)
    assert first.length_controlled is None  # far fewer than MIN_DECISIVE votes
    with pytest.raises(ValueError, match="two different models"):
        pair_preferences([Judgement("r1", "r1", "a", 1, 1)])


def test_length_control_matches_the_closed_form_of_a_saturated_design() -> None:
    """Two length groups (first longer by the same share, or shorter by it): the fit reproduces
    each group's observed win rate, so the intercept is the mean of the two logits and its
    variance is (1/(n1 p1 q1) + 1/(n2 p2 q2)) / 4."""
    longer = [Judgement("a-model", "b-model", "a" if i < 12 else "b", 300, 100) for i in range(16)]  # 12/16
    shorter = [Judgement("b-model", "a-model", "b" if i < 4 else "a", 300, 100) for i in range(8)]  # a-model 4/8
    ties = [Judgement("a-model", "b-model", "tie", 100, 900)] * 5  # excluded from the fit
    result = length_controlled([*longer, *shorter, *ties], "a-model", "b-model")
    assert result is not None and result.votes == 24
    intercept = (_logit(12 / 16) + _logit(4 / 8)) / 2
    se = math.sqrt((1 / (16 * 0.75 * 0.25) + 1 / (8 * 0.5 * 0.5)) / 4)
    assert result.win_probability.rate == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), abs=1e-9)
    assert result.win_probability.low == pytest.approx(_sigmoid(intercept - 1.959963984540054 * se), abs=1e-9)
    assert result.win_probability.high == pytest.approx(_sigmoid(intercept + 1.959963984540054 * se), abs=1e-9)
    # d = +-0.5 in every judgement, so its root mean square is 0.5 and x = +-1.
    assert result.length_scale == pytest.approx(0.5)
    assert result.length_coefficient == pytest.approx((_logit(0.75) - _logit(0.5)) / 2, abs=1e-9)
    # The raw win rate (16/24) is higher than the length-adjusted one: a-model was longer more often.
    pair = pair_preferences([*longer, *shorter])[0]
    assert pair.win_rate.rate == pytest.approx(16 / 24) and pair.length_controlled == result


def _fixed_dataset() -> list[Judgement]:
    """60 decisive judgements; the longer answer wins 6 in 10, the shorter 4 in 10 (a fixed recipe)."""
    rows = []
    for i in range(60):
        length_first = 100 + (i * 37) % 400
        length_second = 100 + (i * 53 + 17) % 400
        won = ((i * 7) % 10) < (6 if length_first > length_second else 4)
        rows.append(Judgement("first", "second", "a" if won else "b", length_first, length_second))
    return rows


def test_logistic_fit_agrees_with_statsmodels() -> None:
    """Reference: statsmodels 0.14.5 `Logit(y, [1, x]).fit(tol=1e-12)` on this data set, run once
    offline (statsmodels is not a project dependency): params and standard errors below."""
    data = _fixed_dataset()
    diffs = [(j.length_a - j.length_b) / (j.length_a + j.length_b) for j in data]
    scale = math.sqrt(sum(d * d for d in diffs) / len(diffs))
    fit = fit_logistic([1.0 if j.outcome == "a" else 0.0 for j in data], [d / scale for d in diffs])
    assert fit is not None
    (b0, b1), covariance = fit
    assert b0 == pytest.approx(-0.13103169656252744, abs=1e-7)
    assert b1 == pytest.approx(0.5979004666225038, abs=1e-7)
    assert math.sqrt(covariance[0][0]) == pytest.approx(0.26956394767540176, abs=1e-7)
    assert math.sqrt(covariance[1][1]) == pytest.approx(0.28510073279810666, abs=1e-7)
    result = length_controlled(data, "first", "second")
    assert result is not None and result.win_probability.rate == pytest.approx(_sigmoid(b0))


def test_length_control_is_none_when_the_data_do_not_allow_it() -> None:
    few = [Judgement("x", "y", "a" if i % 2 else "b", 100 + i, 50) for i in range(MIN_DECISIVE - 1)]
    assert length_controlled(few, "x", "y") is None
    one_sided = [Judgement("x", "y", "a", 100 + i, 50) for i in range(30)]  # x wins every vote
    assert length_controlled(one_sided, "x", "y") is None
    equal = [Judgement("x", "y", "a" if i % 3 else "b", 80, 80) for i in range(30)]  # no length variation
    assert length_controlled(equal, "x", "y") is None
    # Complete separation by length: the longer answer always wins, whoever wrote it.
    separated = [Judgement("x", "y", "a" if i % 2 else "b", 200 if i % 2 else 50, 100) for i in range(30)]
    assert length_controlled(separated, "x", "y") is None
    # The same data with a few upsets is fine.
    upsets = [Judgement("x", "y", "b" if i % 2 else "a", 200 if i % 2 else 50, 100) for i in range(6)]
    assert length_controlled(separated + upsets, "x", "y") is not None


def test_optional_cross_check_with_statsmodels_when_installed() -> None:
    """Runs only where statsmodels is importable (not in CI): a second, random data set."""
    try:
        import numpy as np  # noqa: PLC0415
        from statsmodels.discrete.discrete_model import Logit  # noqa: PLC0415
    except ImportError:
        pytest.skip("statsmodels is not installed (not a project dependency)")
    rng = np.random.default_rng(7)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.4 + 0.8 * x)))).astype(float)
    fit = fit_logistic(y.tolist(), x.tolist())
    assert fit is not None
    reference = Logit(y, np.column_stack([np.ones_like(x), x])).fit(disp=0, tol=1e-12)
    assert fit[0] == pytest.approx(tuple(reference.params), abs=1e-6)
    assert math.sqrt(fit[1][0][0]) == pytest.approx(reference.bse[0], abs=1e-6)
