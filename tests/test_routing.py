from __future__ import annotations

import pytest

from gateway.config import ModelSpec
from gateway.errors import UnknownModel
from gateway.routing import Router


def make_router() -> Router:
    return Router(
        [
            ModelSpec(name="r1-tiny", aliases=["deepseek-r1", "r1"], endpoints=["http://a:1", "http://b:2"]),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=["http://c:3"]),
        ]
    )


def test_resolves_names_and_aliases() -> None:
    router = make_router()
    assert router.resolve("r1-tiny").name == "r1-tiny"
    assert router.resolve("deepseek-r1").name == "r1-tiny"
    assert router.resolve("qwen").name == "qwen-tiny"


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(UnknownModel) as info:
        make_router().resolve("gpt-4")
    assert info.value.status_code == 404
    assert "gpt-4" in info.value.message
    for name in ("r1-tiny", "deepseek-r1", "qwen-tiny", "qwen"):
        assert name in info.value.message


def test_picks_the_replica_with_fewest_in_flight() -> None:
    route = make_router().resolve("r1")
    with route.pick() as first:
        with route.pick() as second:
            assert first.url != second.url
            assert first.in_flight == 1 and second.in_flight == 1
        assert second.in_flight == 0
    assert first.in_flight == 0


def test_unhealthy_replicas_are_skipped_while_a_healthy_one_exists() -> None:
    route = make_router().resolve("r1")
    route.replicas[0].healthy = False
    with route.pick() as a, route.pick() as b:
        assert a.url == b.url == "http://b:2"
    route.replicas[1].healthy = False
    assert route.choose() in route.replicas  # all down: still try one rather than refuse blindly


def test_discovered_replicas_join_drain_and_leave_when_idle() -> None:
    spec = ModelSpec.model_validate(
        {"name": "m", "endpoints": ["http://engines:8101"], "routing": {"discovery": "dns"}}
    )
    router = Router([spec])
    route = router.resolve("m")
    assert route.replicas == [] and route.choose() is None  # nothing until the first lookup
    a, b, c = (f"http://127.0.0.{i}:8101" for i in (2, 3, 4))
    joined, left = route.set_replicas([(a, "http://engines:8101"), (b, "http://engines:8101")])
    assert [r.url for r in joined] == [a, b] and left == []
    first, second = route.replicas
    first.in_flight = 1  # a request still running on a
    joined, left = route.set_replicas([(b, "http://engines:8101"), (c, "http://engines:8101")])
    assert [r.url for r in joined] == [c] and left == []
    assert first.draining and not first.removed and first in route.replicas  # finishing its request
    assert {r.url for r in route.routable} == {b, c}
    assert all(route.choose() is not first for _ in range(10))  # no new request for it
    assert route.choose(exclude={b, c}) is None
    first.in_flight = 0
    joined, left = route.set_replicas([(b, "http://engines:8101"), (c, "http://engines:8101")])
    assert left == [first] and first.removed and first not in route.replicas
    assert route.replicas[0] is second  # the same object: its in-flight count and health are kept


def test_a_draining_replica_that_comes_back_takes_requests_again() -> None:
    spec = ModelSpec.model_validate({"name": "m", "endpoints": ["http://e:1"], "routing": {"discovery": "dns"}})
    route = Router([spec]).resolve("m")
    route.set_replicas([("http://127.0.0.2:1", "http://e:1")])
    (replica,) = route.replicas
    replica.in_flight = 1
    route.set_replicas([])
    assert replica.draining
    route.set_replicas([("http://127.0.0.2:1", "http://e:1")])
    assert not replica.draining and route.replicas == [replica]
