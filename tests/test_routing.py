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
