"""The verdict so far: votes per model pair for one source, with intervals and length control.

    tallies = Tallies(votes)               # one per app: it caches the length-controlled fits
    tallies.tally("compare")               # side-by-side votes (the comparison page)
    tallies.tally("live")                  # votes on live pairs (mirrored traffic)

Per unordered model pair: votes, wins of each model, ties and "both bad" (reported beside the
wins, never folded in as half-wins); each model's **win rate** over the decisive votes (wins of
either model) with a 95% Wilson interval; and the **length-controlled** win rate, Chatbot
Arena's style control: a logistic regression of "first model won" on the normalized length
difference of the two answers, read at equal lengths (gateway/preference.py has the method;
None until a pair has enough decisive votes with varied lengths). R1 writes long answers: the
plain rate may reward length, the controlled one asks whether it wins on substance.

The counts come from the counters kept with each vote (constant cost). The fit needs every
decisive vote's lengths, so it is computed from the narrow judgement rows and cached: redone
only when the votes changed, at most every `refit_s`; `length_controlled.votes` says how many
votes the shown fit used.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from pydantic import BaseModel, Field

from gateway.preference import Interval, Judgement, LengthControlled, length_controlled, wilson_interval
from gateway.votes import PairTally, Source, VoteStore


class WinRate(BaseModel):
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, interval: Interval) -> WinRate:
        return cls(rate=interval.rate, low=interval.low, high=interval.high)


class LengthControl(BaseModel):
    win_rate: dict[str, WinRate] = Field(description="each model's chance to win at equal answer lengths, 95% CI")
    length_coefficient: float = Field(
        description="log-odds that models[0] wins, per standard deviation of its normalized length advantage"
    )
    votes: int = Field(description="decisive votes in the fit")


class PairResult(BaseModel):
    models: tuple[str, str]
    votes: int
    wins: dict[str, int]
    ties: int
    both_bad: int
    decisive: int = Field(description="votes won by either model")
    win_rate: dict[str, WinRate] = Field(description="wins / decisive votes, with a 95% Wilson interval")
    length_controlled: LengthControl | None = Field(
        description="win rates at equal lengths (logistic fit); null until the votes allow a fit"
    )


class TallyResponse(BaseModel):
    object: str = "tally"
    source: Source
    total_votes: int
    pairs: list[PairResult]


class Tallies:
    def __init__(self, votes: VoteStore, *, refit_s: float = 10.0) -> None:
        self.votes = votes
        self.refit_s = refit_s
        self._fits: dict[str, tuple[int, float, dict[tuple[str, str], LengthControlled | None]]] = {}
        self._lock = threading.Lock()  # handlers run in a thread pool: one fit at a time

    def tally(self, source: Source, *, object_name: str = "tally") -> TallyResponse:
        counted = self.votes.tally(source)
        total = sum(t.votes for t in counted)
        fits = self._length_fits(source, total)
        pairs = [_pair_result(t, fits.get(t.models)) for t in counted]
        return TallyResponse(object=object_name, source=source, total_votes=total, pairs=pairs)

    def _length_fits(self, source: Source, total: int) -> dict[tuple[str, str], LengthControlled | None]:
        with self._lock:
            cached = self._fits.get(source)
            if cached is not None and (cached[0] == total or time.monotonic() - cached[1] < self.refit_s):
                return cached[2]
            groups: dict[tuple[str, str], list[Judgement]] = defaultdict(list)
            for j in self.votes.judgements(source):
                first, second = sorted((j.model_a, j.model_b))
                groups[(first, second)].append(j)
            fits = {pair: length_controlled(group, *pair) for pair, group in groups.items()}
            self._fits[source] = (total, time.monotonic(), fits)
            return fits


def _pair_result(tally: PairTally, fit: LengthControlled | None) -> PairResult:
    first, second = tally.models
    decisive = tally.wins[first] + tally.wins[second]
    rates = {model: WinRate.of(wilson_interval(tally.wins[model], decisive)) for model in tally.models}
    control = None
    if fit is not None:
        p = fit.win_probability
        control = LengthControl(
            win_rate={
                first: WinRate(rate=p.rate, low=p.low, high=p.high),
                second: WinRate(rate=1 - p.rate, low=1 - p.high, high=1 - p.low),
            },
            length_coefficient=fit.length_coefficient,
            votes=fit.votes,
        )
    return PairResult(
        models=tally.models,
        votes=tally.votes,
        wins=tally.wins,
        ties=tally.ties,
        both_bad=tally.both_bad,
        decisive=decisive,
        win_rate=rates,
        length_controlled=control,
    )
