"""Preference statistics for side-by-side judgements: win rates and a length-controlled estimate.

    judgements = [Judgement("r1", "qwen", "a", length_a=812, length_b=240), ...]
    for pair in pair_preferences(judgements):          # one entry per unordered model pair
        first, second = pair.models                    # sorted names
        pair.win_rate                                  # Interval: first's share of the decisive votes
        pair.length_controlled                         # LengthControlled | None

Pure Python (no numpy), so the gateway can tally votes and live pairs with it.

Counting. A judgement is a win for one side, a tie, or "both bad". The **win rate** of a pair's
first model is its wins over the *decisive* judgements (wins of either model); ties and both-bad
are counted and reported beside it, not folded in as half-wins. The interval is the 95% Wilson
score interval, which keeps its coverage at 0 or n wins and small counts.

Length control, in the manner of Chatbot Arena's "style control": answers that are longer tend
to win whatever they say, and R1's answers are longer. Per pair, a logistic regression of
"first model won" on an intercept and the normalized length difference

    d = (length_first - length_second) / (length_first + length_second)      (in [-1, 1])

scaled by its standard deviation over the pair's judgements (not centred: Arena centres
because its battles are oriented at random; ours are oriented first-vs-second, so the
intercept must keep meaning "equal lengths"). Fitted by Newton's method (IRLS) on the
decisive judgements only, the same ones the win rate uses; ties and both-bad are excluded.
The **length-adjusted win probability** is sigmoid(intercept): the chance the first model wins
when both answers are equally long, with a 95% interval from the inverse Hessian (observed
information) on the logit scale. It is None when the data do not allow it: fewer than
`MIN_DECISIVE` decisive votes, no variation in the length difference, one model winning every
decisive vote, or the fit diverging (the length difference separates wins from losses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["a", "b", "tie", "both_bad"]
Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
MIN_DECISIVE = 10  # below this many decisive votes a two-parameter fit says nothing useful
_MAX_LOGIT = 12.0  # |coefficient| beyond this (odds of 160,000:1) means the MLE does not exist


@dataclass(frozen=True)
class Judgement:
    """One comparison of two answers: which side was better, and how long each answer was
    (any consistent unit: characters of the answer shown, or tokens)."""

    model_a: str
    model_b: str
    outcome: Outcome
    length_a: int
    length_b: int


@dataclass(frozen=True)
class Interval:
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class LengthControlled:
    """The first model's chance to win at equal answer lengths, from the logistic fit."""

    win_probability: Interval
    length_coefficient: float  # log-odds per standard deviation of the normalized length difference
    length_scale: float  # that standard deviation (of d, see the module docstring)
    votes: int  # decisive judgements in the fit


@dataclass(frozen=True)
class PairPreference:
    """All judgements between two models, whichever side each sat on."""

    models: tuple[str, str]  # sorted, so a pair has one key
    votes: int
    wins: dict[str, int]
    ties: int
    both_bad: int
    win_rate: Interval  # of models[0], over the decisive votes
    length_controlled: LengthControlled | None

    @property
    def decisive(self) -> int:
        return self.wins[self.models[0]] + self.wins[self.models[1]]


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> Interval:
    """Wilson score interval: `wilson_interval(7, 10)` is 0.70 in [0.397, 0.892]; (0, 0, 1) for no trials."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must be within 0..trials={trials}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = max(0.0, centre - half) if successes else 0.0
    high = min(1.0, centre + half) if successes < trials else 1.0
    return Interval(p, low, high)


def pair_preferences(judgements: Iterable[Judgement]) -> list[PairPreference]:
    """One PairPreference per unordered model pair, most-judged first."""
    by_pair: dict[tuple[str, str], list[Judgement]] = {}
    for j in judgements:
        if j.model_a == j.model_b:
            raise ValueError(f"a judgement compares two different models, got {j.model_a!r} twice")
        by_pair.setdefault(tuple(sorted((j.model_a, j.model_b))), []).append(j)  # type: ignore[arg-type]
    result = [_pair(first, second, group) for (first, second), group in by_pair.items()]
    return sorted(result, key=lambda p: (-p.votes, p.models))


def _pair(first: str, second: str, group: list[Judgement]) -> PairPreference:
    wins = {first: 0, second: 0}
    ties = both_bad = 0
    for j in group:
        if j.outcome == "tie":
            ties += 1
        elif j.outcome == "both_bad":
            both_bad += 1
        else:
            wins[j.model_a if j.outcome == "a" else j.model_b] += 1
    return PairPreference(
        models=(first, second),
        votes=len(group),
        wins=wins,
        ties=ties,
        both_bad=both_bad,
        win_rate=wilson_interval(wins[first], wins[first] + wins[second]),
        length_controlled=length_controlled(group, first, second),
    )


def length_controlled(judgements: Iterable[Judgement], first: str, second: str) -> LengthControlled | None:
    """Length-adjusted chance that `first` beats `second` (see the module docstring), or None."""
    won: list[float] = []
    diffs: list[float] = []
    for j in judgements:
        if j.outcome not in ("a", "b") or {j.model_a, j.model_b} != {first, second}:
            continue
        length_first, length_second = (j.length_a, j.length_b) if j.model_a == first else (j.length_b, j.length_a)
        total = length_first + length_second
        diffs.append((length_first - length_second) / total if total > 0 else 0.0)
        winner = j.model_a if j.outcome == "a" else j.model_b
        won.append(1.0 if winner == first else 0.0)
    n = len(won)
    if n < MIN_DECISIVE or sum(won) in (0, n):
        return None
    scale = math.sqrt(sum(d * d for d in diffs) / n)  # root mean square: scales, does not centre
    if scale < 1e-9:
        return None  # every pair of answers equally long: length cannot be told from the model
    fit = fit_logistic(won, [d / scale for d in diffs])
    if fit is None:
        return None
    (intercept, slope), covariance = fit
    se = math.sqrt(covariance[0][0])
    return LengthControlled(
        win_probability=Interval(_sigmoid(intercept), _sigmoid(intercept - Z_95 * se), _sigmoid(intercept + Z_95 * se)),
        length_coefficient=slope,
        length_scale=scale,
        votes=n,
    )


Matrix2 = tuple[tuple[float, float], tuple[float, float]]


def fit_logistic(
    y: Sequence[float], x: Sequence[float], *, max_iterations: int = 100, tolerance: float = 1e-10
) -> tuple[tuple[float, float], Matrix2] | None:
    """Maximum likelihood for P(y=1) = sigmoid(b0 + b1 x) by Newton's method with step halving.

    Returns ((b0, b1), covariance = inverse of the observed information) or None when the
    maximum does not exist or cannot be reached (separation, a singular information matrix).
    """
    b0 = b1 = 0.0
    previous = _log_likelihood(y, x, b0, b1)
    for _ in range(max_iterations):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for yi, xi in zip(y, x, strict=True):
            p = _sigmoid(b0 + b1 * xi)
            w = p * (1 - p)
            g0 += yi - p
            g1 += (yi - p) * xi
            h00 += w
            h01 += w * xi
            h11 += w * xi * xi
        det = h00 * h11 - h01 * h01
        if det <= 1e-12 * max(1.0, h00 * h11):
            return None
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        scale = 1.0
        while True:  # halve the step until the likelihood does not fall
            c0, c1 = b0 + scale * step0, b1 + scale * step1
            current = _log_likelihood(y, x, c0, c1)
            if current >= previous - 1e-12 or scale < 1e-6:
                break
            scale /= 2
        b0, b1, change, previous = c0, c1, abs(current - previous), current
        if max(abs(b0), abs(b1)) > _MAX_LOGIT:
            return None  # running off to infinity: separated data
        if change < tolerance and max(abs(scale * step0), abs(scale * step1)) < 1e-7:
            information = _information(x, b0, b1)
            det = information[0][0] * information[1][1] - information[0][1] ** 2
            if det <= 0:
                return None
            covariance = (
                (information[1][1] / det, -information[0][1] / det),
                (-information[0][1] / det, information[0][0] / det),
            )
            return (b0, b1), covariance
    return None


def _information(x: Sequence[float], b0: float, b1: float) -> Matrix2:
    h00 = h01 = h11 = 0.0
    for xi in x:
        p = _sigmoid(b0 + b1 * xi)
        w = p * (1 - p)
        h00 += w
        h01 += w * xi
        h11 += w * xi * xi
    return (h00, h01), (h01, h11)


def _log_likelihood(y: Sequence[float], x: Sequence[float], b0: float, b1: float) -> float:
    total = 0.0
    for yi, xi in zip(y, x, strict=True):
        eta = b0 + b1 * xi
        # log(1 + e^eta) computed without overflow for large |eta|
        softplus = eta + math.log1p(math.exp(-eta)) if eta > 0 else math.log1p(math.exp(eta))
        total += yi * eta - softplus
    return total


def _sigmoid(t: float) -> float:
    if t >= 0:
        return 1 / (1 + math.exp(-t))
    e = math.exp(t)
    return e / (1 + e)
