"""Load shapes as data, chosen with `--shape`.

    --shape users                       Locust's own -u/-r/-t: a fixed number of users (the default)
    --shape steps --steps 1:30,4:30,16:60,64:60
                                        a step ramp of concurrency: users:seconds per step
    --shape arrival --arrival-rate 2 -u 32 -t 5m
                                        a constant arrival rate of 2 requests/s, carried by up to
                                        32 users that each start one request every 32/2 = 16 s

A closed loop (users, steps) measures throughput at a given concurrency; an open loop
(arrival) measures latency at a given request rate, as real traffic arrives. In arrival mode
-u must cover rate x the longest request time, or the rate drops when requests take longer.

    shape = shape_from_options(options)
    shape.target(elapsed_s)     # -> (users, spawn_rate) or None when the test is over

users.py holds the one LoadTestShape (`ScenarioShape`), which only asks this data. This module
does not import Locust, whose import monkey-patches the whole process with gevent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Target = tuple[int, float] | None


@dataclass(frozen=True)
class FixedUsers:
    users: int
    spawn_rate: float
    duration_s: float | None = None  # None: until stopped

    def target(self, elapsed_s: float) -> Target:
        if self.duration_s is not None and elapsed_s >= self.duration_s:
            return None
        return self.users, self.spawn_rate


@dataclass(frozen=True)
class Step:
    users: int
    duration_s: float


@dataclass(frozen=True)
class StepRamp:
    steps: tuple[Step, ...]
    spawn_rate: float

    def target(self, elapsed_s: float) -> Target:
        end = 0.0
        for step in self.steps:
            end += step.duration_s
            if elapsed_s < end:
                return step.users, self.spawn_rate
        return None


@dataclass(frozen=True)
class ArrivalRate:
    rate_per_s: float
    users: int
    duration_s: float | None = None

    @property
    def pacing_s(self) -> float:
        """Each user starts one request per this many seconds, so together they start `rate_per_s`."""
        return self.users / self.rate_per_s

    def target(self, elapsed_s: float) -> Target:
        if self.duration_s is not None and elapsed_s >= self.duration_s:
            return None
        return self.users, float(self.users)  # all at once; their first requests are spread (see users.py)


Shape = FixedUsers | StepRamp | ArrivalRate


def parse_steps(text: str) -> tuple[Step, ...]:
    """'1:30,4:30,16:60' -> (Step(1, 30), Step(4, 30), Step(16, 60))."""
    steps = []
    for item in text.split(","):
        users, _, seconds = item.strip().partition(":")
        if not users.isdigit() or not seconds:
            raise ValueError(f"--steps: expected users:seconds, got {item!r}")
        steps.append(Step(int(users), float(seconds)))
    return tuple(steps)


def shape_from_options(options: Any) -> Shape:
    users = int(options.num_users or 1)
    spawn_rate = float(options.spawn_rate or users)
    run_time = float(options.run_time) if options.run_time else None
    if options.shape == "steps":
        return StepRamp(parse_steps(options.steps), spawn_rate=max(spawn_rate, 1.0))
    if options.shape == "arrival":
        return ArrivalRate(float(options.arrival_rate), users, run_time)
    return FixedUsers(users, spawn_rate, run_time)
