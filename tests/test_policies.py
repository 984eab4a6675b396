"""Each routing policy's choice (gateway/policies.py), on replicas with set loads; no network."""

from __future__ import annotations

import collections
import random
import string

import pytest

from gateway.config import AdmissionSpec, ModelSpec, RoutingSpec
from gateway.policies import CacheAware, HashRing, SessionAffinity
from gateway.routing import ModelRoute, Replica
from gateway.routing_hints import RoutingHints

URLS = [f"http://10.0.0.{i}:8101" for i in range(1, 5)]


def route(policy: str, urls: list[str] = URLS, *, max_in_flight: int = 64, **knobs: object) -> ModelRoute:
    spec = ModelSpec(
        name="m",
        endpoints=urls,
        admission=AdmissionSpec(max_in_flight=max_in_flight),
        routing=RoutingSpec.model_validate({"policy": policy, **knobs}),
    )
    return ModelRoute(spec, [Replica(url) for url in urls])


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(n))


# --- least_loaded ---------------------------------------------------------------------------


def test_least_loaded_takes_the_fewest_in_flight_and_rotates_ties() -> None:
    r = route("least_loaded")
    r.replicas[0].in_flight, r.replicas[1].in_flight, r.replicas[2].in_flight, r.replicas[3].in_flight = 3, 1, 1, 2
    chosen = {r.choose().url for _ in range(10)}  # type: ignore[union-attr]
    assert chosen == {URLS[1], URLS[2]}


# --- session --------------------------------------------------------------------------------


def session(key: str) -> RoutingHints:
    return RoutingHints(session_key=key)


def test_session_sticks_to_one_replica_whatever_the_load_below_its_share() -> None:
    r = route("session")
    first = r.decide(hints=session("alice"))
    assert first is not None and first.reason == "sticky"
    first.replica.in_flight = 40  # busier than every other replica, still below max_in_flight
    for _ in range(20):
        again = r.decide(hints=session("alice"))
        assert again is not None and again.replica is first.replica and again.reason == "sticky"


def test_sessions_spread_over_replicas() -> None:
    r = route("session")
    counts = collections.Counter(r.choose(hints=session(f"user-{i}")).url for i in range(4000))  # type: ignore[union-attr]
    assert set(counts) == set(URLS)
    assert min(counts.values()) > 4000 / len(URLS) * 0.7, counts


def test_adding_a_replica_moves_only_its_share_of_sessions() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    before = route("session", URLS[:3])
    after = route("session", URLS)
    placed_before = {k: before.choose(hints=session(k)).url for k in keys}  # type: ignore[union-attr]
    placed_after = {k: after.choose(hints=session(k)).url for k in keys}  # type: ignore[union-attr]
    moved = [k for k in keys if placed_before[k] != placed_after[k]]
    assert all(placed_after[k] == URLS[3] for k in moved), "a session moved between two old replicas"
    assert 0.15 < len(moved) / len(keys) < 0.35  # about a quarter: the new replica's share


def test_a_session_moves_while_its_replica_is_down_and_comes_back() -> None:
    r = route("session")
    home = r.choose(hints=session("bob"))
    assert home is not None
    home.healthy = False
    away = r.decide(hints=session("bob"))
    assert away is not None and away.replica is not home and away.reason == "moved"
    assert r.choose(hints=session("bob")) is away.replica  # the same stand-in every time
    home.healthy = True
    assert r.choose(hints=session("bob")) is home


def test_a_full_replica_passes_its_sessions_to_the_next_on_the_ring() -> None:
    r = route("session", max_in_flight=2)
    home = r.choose(hints=session("carol"))
    assert home is not None
    home.in_flight = 2
    overflow = r.decide(hints=session("carol"))
    assert overflow is not None and overflow.replica is not home and overflow.reason == "moved"


def test_no_session_key_is_least_loaded() -> None:
    r = route("session")
    for replica, load in zip(r.replicas, (5, 0, 5, 5), strict=True):
        replica.in_flight = load
    choice = r.decide()
    assert choice is not None and choice.replica.url == URLS[1] and choice.reason == "no_key"


def test_retry_excludes_the_tried_replica() -> None:
    r = route("session")
    home = r.choose(hints=session("dave"))
    assert home is not None
    retry = r.choose(exclude={home.url}, hints=session("dave"))
    assert retry is not None and retry is not home


def test_ring_agrees_across_instances_and_processes() -> None:
    # blake2b, not hash(): every gateway pod places a session on the same replica.
    assert list(HashRing(URLS).walk("eve")) == list(HashRing(list(reversed(URLS))).walk("eve"))


def test_session_without_members_falls_back_to_least_loaded() -> None:
    a, b = Replica(URLS[0], in_flight=3), Replica(URLS[1])
    choice = SessionAffinity(max_in_flight=8).choose([a, b], [], session("frank"))
    assert choice.replica is b and choice.reason == "moved"


# --- prefix ---------------------------------------------------------------------------------


def prompt(text: str) -> RoutingHints:
    return RoutingHints(prompt_text=text)


def test_prefix_follows_the_replica_that_holds_the_longest_match() -> None:
    r = route("prefix", URLS[:2], balance_abs_threshold=8)
    system = words(100, seed=1)
    conversation = system + words(40, seed=2)
    first = r.decide(hints=prompt(conversation))
    assert first is not None and first.reason == "cache_miss"
    for turn in range(3, 8):  # a growing conversation stays where its history is
        first.replica.in_flight += 1  # ... even when that replica is a little busier
        conversation += words(40, seed=turn)
        again = r.decide(hints=prompt(conversation))
        assert again is not None and again.replica is first.replica and again.reason == "cache_hit"


def test_prefix_sends_new_prompts_to_the_least_loaded_then_smallest_tree() -> None:
    r = route("prefix", URLS[:2])
    a, b = r.replicas
    a.in_flight = 1
    choice = r.decide(hints=prompt(words(200, seed=3)))
    assert choice is not None and choice.replica is b and choice.reason == "cache_miss"
    a.in_flight = b.in_flight = 0
    # b's tree is now larger: an equally loaded new prompt goes to a
    choice = r.decide(hints=prompt(words(200, seed=4)))
    assert choice is not None and choice.replica is a


def test_prefix_below_the_threshold_counts_as_new() -> None:
    r = route("prefix", URLS[:2], cache_threshold=0.5)
    shared = words(20, seed=5)
    first = r.decide(hints=prompt(shared + words(200, seed=6)))
    assert first is not None
    first.replica.in_flight = 1
    # Shares only ~10% of its text with what `first` holds: least loaded, not the match.
    choice = r.decide(hints=prompt(shared + words(200, seed=7)))
    assert choice is not None and choice.replica is not first.replica and choice.reason == "cache_miss"


def test_prefix_tells_equal_matches_apart_by_load() -> None:
    r = route("prefix", URLS[:2])
    system = words(300, seed=8)
    for replica in r.replicas:  # both hold the shared system prompt
        assert isinstance(r.policy, CacheAware)
        r.policy.index.insert(replica.url, r.policy.index.path(system))
    r.replicas[0].in_flight = 3
    choice = r.decide(hints=prompt(system + words(20, seed=9)))
    assert choice is not None and choice.replica is r.replicas[1] and choice.reason == "cache_hit"


@pytest.mark.parametrize(
    ("loads", "imbalanced"),
    [((10, 1), True), ((5, 0), False), ((40, 30), False), ((60, 30), True)],  # abs 8, rel 1.5
)
def test_prefix_gives_up_the_cache_when_loads_diverge(loads: tuple[int, int], imbalanced: bool) -> None:
    r = route("prefix", URLS[:2], balance_abs_threshold=8, balance_rel_threshold=1.5)
    holder, other = r.replicas
    text = words(300, seed=10)
    assert isinstance(r.policy, CacheAware)
    r.policy.index.insert(holder.url, r.policy.index.path(text))
    holder.in_flight, other.in_flight = loads
    choice = r.decide(hints=prompt(text + " more"))
    assert choice is not None
    assert (choice.replica, choice.reason) == ((other, "balance") if imbalanced else (holder, "cache_hit"))


def test_prefix_without_a_prompt_is_least_loaded() -> None:
    r = route("prefix", URLS[:2])
    r.replicas[0].in_flight = 2
    choice = r.decide()
    assert choice is not None and choice.replica is r.replicas[1] and choice.reason == "no_prompt"


def test_prefix_skips_an_unhealthy_holder() -> None:
    r = route("prefix", URLS[:2])
    text = words(300, seed=11)
    holder = r.choose(hints=prompt(text))
    assert holder is not None
    holder.healthy = False
    assert r.choose(hints=prompt(text)) is not holder


def test_a_replica_that_leaves_is_forgotten_by_the_prefix_tree() -> None:
    r = route("prefix", URLS[:2])
    assert isinstance(r.policy, CacheAware)
    holder = r.choose(hints=prompt(words(300, seed=12)))
    assert holder is not None and r.policy.index.size(holder.url) > 0
    r.set_replicas([(u, "http://m:8101") for u in URLS[:2] if u != holder.url])
    assert r.policy.index.size(holder.url) == 0


def test_prefix_judges_the_load_of_the_matching_replica_only() -> None:
    # sgl-router would see max - min = 10 across the fleet and leave the cache; the replica that
    # holds it is the idle one, so it keeps the request.
    r = route("prefix", URLS[:3])
    holder, busy, quiet = r.replicas
    text = words(300, seed=13)
    assert isinstance(r.policy, CacheAware)
    r.policy.index.insert(holder.url, r.policy.index.path(text))
    holder.in_flight, busy.in_flight, quiet.in_flight = 0, 10, 0
    choice = r.decide(hints=prompt(text + " next"))
    assert choice is not None and choice.replica is holder and choice.reason == "cache_hit"


def test_new_conversations_sharing_a_system_prompt_spread_with_the_default_thresholds() -> None:
    # Each new conversation matches the shared system prompt (most of its first prompt) on the
    # replica that cached it first; the defaults must not pile all of them onto that replica.
    r = route("prefix", URLS[:2])
    system = words(300, seed=14)
    for conversation in range(8):  # closed loop: each stays in flight
        choice = r.decide(hints=prompt(system + words(30, seed=100 + conversation)))
        assert choice is not None
        choice.replica.in_flight += 1
    assert sorted(replica.in_flight for replica in r.replicas) == [4, 4]


def test_new_conversations_spread_by_load_even_when_the_load_is_light() -> None:
    # Open loop at a light load: one or two conversations in flight. Before `shared_prefix`
    # every new one matched the system prompt on the replica that cached it first and went there
    # (the balance thresholds never trip at these counts).
    r = route("prefix", URLS[:2])
    system = words(300, seed=15)
    reasons = collections.Counter()
    placed = collections.Counter()
    for conversation in range(8):
        r.replicas[conversation % 2].in_flight = 1  # the other replica is idle
        choice = r.decide(hints=prompt(system + words(30, seed=200 + conversation)))
        assert choice is not None and choice.replica.in_flight == 0
        reasons[choice.reason] += 1
        placed[choice.replica.url] += 1
        for replica in r.replicas:
            replica.in_flight = 0
    assert placed == {URLS[0]: 4, URLS[1]: 4}
    assert reasons == {"cache_miss": 1, "shared_prefix": 7}


def test_a_shared_prefix_goes_to_the_longer_match_when_loads_are_equal() -> None:
    r = route("prefix", URLS[:2])
    system = words(300, seed=16)
    first = r.decide(hints=prompt(system + words(30, seed=17)))
    assert first is not None
    for seed in range(18, 22):  # idle fleet: the replica holding the system prompt keeps it
        choice = r.decide(hints=prompt(system + words(30, seed=seed)))
        assert choice is not None and choice.replica is first.replica and choice.reason == "shared_prefix"


def test_a_conversations_next_turn_follows_its_cache_past_a_lighter_replica() -> None:
    r = route("prefix", URLS[:2])
    system = words(300, seed=23)
    conversation = system + words(30, seed=24)
    home = r.decide(hints=prompt(conversation))
    assert home is not None
    other = r.decide(hints=prompt(system + words(30, seed=25)))  # another conversation branches
    assert other is not None
    home.replica.in_flight = 2  # busier, but within the balance thresholds
    for turn in range(26, 30):
        conversation += words(40, seed=turn)
        choice = r.decide(hints=prompt(conversation))
        assert choice is not None and choice.replica is home.replica and choice.reason == "cache_hit"


# --- prefix: the engines' own load (gateway/engine_load.py sets waiting / kv_usage) ----------


def holding(r: ModelRoute, replica: Replica, text: str) -> None:
    assert isinstance(r.policy, CacheAware)
    r.policy.index.insert(replica.url, r.policy.index.path(text))


@pytest.mark.parametrize(
    ("holder_gauges", "other_gauges", "expected"),
    [
        ((0, 0.5), (0, 0.2), "cache_hit"),  # room on both
        ((2, 0.5), (0, 0.2), "engine_full"),  # the holder's engine queues requests
        ((0, 0.95), (0, 0.2), "engine_full"),  # the holder's KV cache is above 0.9
        ((0, 0.95), (1, 0.2), "cache_hit"),  # both full: the cache is worth more
        ((None, None), (0, 0.0), "cache_hit"),  # the holder's gauges unknown: no signal
    ],
)
def test_prefix_gives_up_the_cache_when_the_holders_engine_is_full(
    holder_gauges: tuple[float | None, float | None], other_gauges: tuple[float | None, float | None], expected: str
) -> None:
    r = route("prefix", URLS[:2])
    holder, other = r.replicas
    text = words(300, seed=30)
    holding(r, holder, text)
    holder.waiting, holder.kv_usage = holder_gauges
    other.waiting, other.kv_usage = other_gauges
    holder.in_flight = 1  # within the in-flight thresholds: only the engine's gauges can move it
    choice = r.decide(hints=prompt(text + " next"))
    assert choice is not None and choice.reason == expected
    assert choice.replica is (other if expected == "engine_full" else holder)


def test_new_conversations_avoid_full_engines_even_when_they_carry_fewer_requests() -> None:
    r = route("prefix", URLS[:3])
    full, busy, idle_but_full = r.replicas
    full.waiting, busy.waiting, idle_but_full.kv_usage = 3, 0, 0.97
    full.in_flight, busy.in_flight, idle_but_full.in_flight = 0, 2, 0
    system = words(300, seed=31)
    first = r.decide(hints=prompt(system + words(30, seed=32)))
    assert first is not None and first.replica is busy and first.reason == "cache_miss"
    second = r.decide(hints=prompt(system + words(30, seed=33)))  # shares the system prompt
    assert second is not None and second.replica is busy and second.reason == "shared_prefix"


def test_with_every_engine_full_load_decides_as_before() -> None:
    r = route("prefix", URLS[:2])
    a, b = r.replicas
    a.waiting = b.waiting = 2
    a.in_flight = 1
    choice = r.decide(hints=prompt(words(200, seed=34)))
    assert choice is not None and choice.replica is b and choice.reason == "cache_miss"


def test_a_kv_threshold_of_1_leaves_only_the_queue_as_a_signal() -> None:
    r = route("prefix", URLS[:2], balance_kv_threshold=1.0)
    holder, other = r.replicas
    text = words(300, seed=35)
    holding(r, holder, text)
    holder.kv_usage = 1.0
    choice = r.decide(hints=prompt(text + " next"))
    assert choice is not None and choice.replica is holder and choice.reason == "cache_hit"
    holder.waiting = 1
    choice = r.decide(hints=prompt(text + " next"))
    assert choice is not None and choice.replica is other and choice.reason == "engine_full"
