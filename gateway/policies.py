"""Routing policies: which of a model's replicas gets a request (`routing.policy` per model).

    policy = make_policy(model_spec)
    choice = policy.choose(candidates, members, hints)   # -> Choice(replica, reason)
    policy.forget(url)                                   # a replica left the route

`candidates` are the replicas this request may go to (healthy, not draining, not already tried:
gateway/routing.py filters them the same way for every policy); `members` are all the replicas
that take new requests, healthy or not, which is what a session's place on the hash ring is
computed over, so that a replica's sessions come back to it when it recovers.

- `least_loaded`: fewest requests in flight; ties go round-robin, so sequential traffic spreads.
- `session`: consistent hashing of the session key onto a ring of 160 points per replica, so a
  replica that joins takes only its share of the sessions and one that leaves gives only its own
  away. A session whose replica is unhealthy, already tried or has `max_in_flight` requests in
  flight (its share of the model's admission) goes to the next replica on the ring. No key:
  least_loaded.
- `prefix`: cache-aware, as in the SGLang model gateway (sgl-router's cache_aware policy): the
  replica whose prefix tree (gateway/prefix_index.py) matches the longest part of the prompt gets
  it, if that part exceeds `cache_threshold` of the prompt; below it the prompt counts as new and
  goes to the least loaded replica (its tree size breaking ties). The cache is given up for load
  when the matching replica is overloaded next to the least loaded one: more than
  `balance_abs_threshold` requests in flight beyond it, and more than `balance_rel_threshold`
  times its count. A match that ends where other prompts went on past it (`shared_prefix`: the
  system prompt every conversation starts with) does not hold the prompt either: it goes to the
  least loaded replica, the longer match breaking ties. Either way the prompt is then recorded
  in the chosen replica's tree.

  Three choices differ from sgl-router, all for small fleets, where one conversation more or less
  is a large share of a replica's load: sgl-router judges imbalance across all replicas (max -
  min), so a request whose cache sits on an idle replica can be sent away from it; here it is the
  matching replica's load that is judged. Replicas that match equally well (every one holds the
  shared system prompt) are told apart by load, where sgl-router takes any. And a new prompt goes
  to the least loaded replica, where sgl-router takes the smallest tree whatever its load. Its
  default thresholds (32 requests, 1.1x) suit GPU batches of hundreds; ours (2, 1.5x) keep a
  busy replica from taking every new conversation. They act only under load, though: at a light
  load, where in-flight counts stay at 0 or 1, every new conversation matched the system prompt
  on the replica that cached it first and went there (a paced run put two thirds of the load on
  one of two replicas), hence `shared_prefix`. A conversation's next turn still follows its
  cache: its prompt extends the whole of the previous one, whose last block no prompt went past.

  In-flight counts do not show what the requests hold, so the policy also reads the engines'
  own gauges (gateway/engine_load.py, `engine_load: true`): a replica whose engine has requests
  waiting in its scheduler or more than `balance_kv_threshold` of its KV cache in use is *full*.
  A full holder gives its match up (`engine_full`) when some candidate is not full, and new
  prompts (`shared_prefix`, `cache_miss`) and rebalanced ones go to the least loaded replica
  that is not full, if any. In the 64-block routing benchmark the busiest replica under this
  policy reached 92-95% of its blocks and requests waited there up to a minute while the
  in-flight rule saw nothing to balance.

Every choice carries a reason, counted in /metrics as `gateway_routing_decisions{model,reason}`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.config import ModelSpec, RoutingSpec
from gateway.prefix_index import PrefixIndex
from gateway.routing_hints import RoutingHints

if TYPE_CHECKING:
    from gateway.routing import Replica

RING_POINTS_PER_REPLICA = 160


@dataclass(frozen=True)
class Choice:
    replica: Replica
    # least_loaded | sticky | moved | no_key | cache_hit | shared_prefix | cache_miss | balance | engine_full
    # | no_prompt
    reason: str


class Policy(Protocol):
    name: str

    def choose(self, candidates: Sequence[Replica], members: Sequence[Replica], hints: RoutingHints) -> Choice: ...

    def forget(self, url: str) -> None: ...


def make_policy(spec: ModelSpec) -> Policy:
    routing = spec.routing
    if routing.policy == "session":
        return SessionAffinity(max_in_flight=spec.admission.max_in_flight)
    if routing.policy == "prefix":
        return CacheAware(routing)
    return LeastLoaded()


class LeastLoaded:
    name = "least_loaded"

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Replica], *, tiebreak: dict[str, int] | None = None) -> Replica:
        # Ties go round-robin, so sequential traffic is spread over idle replicas too.
        self._turn = (self._turn + 1) % len(candidates)
        rotated = [*candidates[self._turn :], *candidates[: self._turn]]
        if tiebreak is None:
            return min(rotated, key=lambda r: r.in_flight)
        return min(rotated, key=lambda r: (r.in_flight, tiebreak.get(r.url, 0)))

    def choose(self, candidates: Sequence[Replica], members: Sequence[Replica], hints: RoutingHints) -> Choice:
        return Choice(self.pick(candidates), "least_loaded")

    def forget(self, url: str) -> None:
        pass


def stable_hash(text: str) -> int:
    """The same number in every gateway process (unlike `hash`), so gateways agree on sessions."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing: each URL owns the arcs before its points; a key goes to the owner of
    the first point at or after its hash, then around the ring."""

    def __init__(self, urls: Sequence[str], points_per_url: int = RING_POINTS_PER_REPLICA) -> None:
        ring = sorted((stable_hash(f"{url}#{i}"), url) for url in urls for i in range(points_per_url))
        self._hashes = [h for h, _ in ring]
        self._urls = [u for _, u in ring]
        self.size = len(set(urls))

    def walk(self, key: str) -> Iterator[str]:
        """Every URL once, in ring order from the key's position."""
        if not self._urls:
            return
        start = bisect.bisect_left(self._hashes, stable_hash(key))
        seen: set[str] = set()
        for i in range(len(self._urls)):
            url = self._urls[(start + i) % len(self._urls)]
            if url not in seen:
                seen.add(url)
                yield url
                if len(seen) == self.size:
                    return


class SessionAffinity:
    name = "session"

    def __init__(self, *, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._fallback = LeastLoaded()
        self._ring = HashRing([])
        self._ring_of: tuple[str, ...] = ()

    def choose(self, candidates: Sequence[Replica], members: Sequence[Replica], hints: RoutingHints) -> Choice:
        if hints.session_key is None:
            return Choice(self._fallback.pick(candidates), "no_key")
        ring = self._ring_for(members)
        by_url = {r.url: r for r in candidates}
        owner = True  # still on the session's own replica
        for url in ring.walk(hints.session_key):
            replica = by_url.get(url)
            if replica is not None and replica.in_flight < self.max_in_flight:
                return Choice(replica, "sticky" if owner else "moved")
            owner = False
        # Every candidate is full (or none is a member, e.g. all members unhealthy and the
        # candidates are their stale selves): the least loaded one.
        return Choice(self._fallback.pick(candidates), "moved")

    def _ring_for(self, members: Sequence[Replica]) -> HashRing:
        urls = tuple(sorted(r.url for r in members))
        if urls != self._ring_of:
            self._ring, self._ring_of = HashRing(urls), urls
        return self._ring

    def forget(self, url: str) -> None:
        pass  # the ring follows the members at the next choice


class CacheAware:
    name = "prefix"

    def __init__(self, routing: RoutingSpec) -> None:
        self.cache_threshold = routing.cache_threshold
        self.balance_abs_threshold = routing.balance_abs_threshold
        self.balance_rel_threshold = routing.balance_rel_threshold
        self.balance_kv_threshold = routing.balance_kv_threshold
        self.index = PrefixIndex(
            block_chars=routing.block_chars, max_blocks=max(1, routing.max_tree_chars // routing.block_chars)
        )
        self._least_loaded = LeastLoaded()

    def full(self, replica: Replica) -> bool:
        """Its engine says it has no room: requests wait in its scheduler, or more than
        `balance_kv_threshold` of its KV cache is in use. Unknown gauges say nothing."""
        if replica.waiting:
            return True
        return replica.kv_usage is not None and replica.kv_usage > self.balance_kv_threshold

    def roomy(self, candidates: Sequence[Replica]) -> Sequence[Replica]:
        """The candidates that are not full, or all of them if every one is."""
        return [r for r in candidates if not self.full(r)] or candidates

    def overloaded(self, replica: Replica, candidates: Sequence[Replica]) -> str | None:
        """Why `replica` should give its cache up for load, if it should: `balance` when it
        carries too much more in flight than the least loaded candidate, `engine_full` when its
        engine is full and another's is not."""
        high, low = replica.in_flight, min(r.in_flight for r in candidates)
        if high - low > self.balance_abs_threshold and high > low * self.balance_rel_threshold:
            return "balance"
        if self.full(replica) and any(not self.full(r) for r in candidates):
            return "engine_full"
        return None

    def choose(self, candidates: Sequence[Replica], members: Sequence[Replica], hints: RoutingHints) -> Choice:
        text = hints.prompt_text
        if not text:
            return Choice(self._least_loaded.pick(candidates), "no_prompt")
        path = self.index.path(text)
        matched = {r.url: self.index.matched(path, r.url) for r in candidates}
        best = max(matched.values())
        if best and best * self.index.block_chars / len(text) > self.cache_threshold:
            holder = self._least_loaded.pick([r for r in candidates if matched[r.url] == best])
            if self.index.continued(path, best, holder.url):
                # The match ends where other prompts went on (a shared system prompt): this one
                # starts a branch of its own, and its later turns will follow it wherever it
                # starts, so load places it; the longer match breaks ties.
                longer = {url: -blocks for url, blocks in matched.items()}
                choice = Choice(self._least_loaded.pick(self.roomy(candidates), tiebreak=longer), "shared_prefix")
            elif reason := self.overloaded(holder, candidates):
                other = self._least_loaded.pick(self.roomy(candidates))
                choice = Choice(other, reason if other is not holder else "cache_hit")  # the others are full
            else:
                choice = Choice(holder, "cache_hit")
        else:
            sizes = {r.url: self.index.size(r.url) for r in candidates}
            choice = Choice(self._least_loaded.pick(self.roomy(candidates), tiebreak=sizes), "cache_miss")
        self.index.insert(choice.replica.url, path)
        return choice

    def forget(self, url: str) -> None:
        self.index.forget(url)
