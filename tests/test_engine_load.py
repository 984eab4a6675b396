"""Reading the engines' own load for the `prefix` policy (gateway/engine_load.py), against FAKE
engines (httpx.MockTransport serving /metrics pages in vLLM's format); the gateway's lifespan
wiring is checked against the same fakes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec, RoutingSpec
from gateway.engine_load import EngineLoadMonitor, parse_engine_load
from gateway.routing import Router

# Trimmed from a vLLM 0.32 CPU engine's /metrics (one engine core).
PAGE = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.9375
vllm:request_queue_time_seconds_count{engine="0",model_name="smollm2"} 31.0
"""


def test_parse_reads_the_queue_and_the_kv_cache_use() -> None:
    load = parse_engine_load(PAGE)
    assert load is not None and (load.waiting, load.kv_usage) == (2.0, 0.9375)


def test_parse_sums_queues_and_takes_the_fullest_cache_over_engine_cores() -> None:
    page = PAGE + PAGE.replace(b'engine="0"', b'engine="1"').replace(b"} 2.0", b"} 1.0").replace(b"0.9375", b"0.25")
    load = parse_engine_load(page)
    assert load is not None and (load.waiting, load.kv_usage) == (3.0, 0.9375)


def test_parse_of_a_page_without_the_gauges_is_none() -> None:
    assert parse_engine_load(b"# nothing here\nprocess_cpu_seconds_total 3.0\n") is None


def spec(name: str, urls: list[str], **routing: object) -> ModelSpec:
    return ModelSpec(name=name, endpoints=urls, routing=RoutingSpec.model_validate(routing))


def test_the_monitor_sets_each_prefix_replicas_gauges_and_forgets_them_when_a_read_fails() -> None:
    pages = {
        "a:1": PAGE,
        "b:1": PAGE.replace(b"} 2.0", b"} 0.0").replace(b"0.9375", b"0.125"),
        "c:1": PAGE,
    }
    down: set[str] = set()
    seen: list[str] = []

    def fake_engine(request: httpx.Request) -> httpx.Response:  # a FAKE engine's /metrics
        host = f"{request.url.host}:{request.url.port}"
        seen.append(host)
        if host in down:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=pages[host])

    router = Router(
        [
            spec("cached", ["http://a:1", "http://b:1"], policy="prefix"),
            spec("plain", ["http://c:1"]),  # least_loaded: not read
            spec("off", ["http://c:1"], policy="prefix", engine_load=False),  # not read either
        ]
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake_engine)) as client:
            monitor = EngineLoadMonitor(client, router)
            await monitor.check_once()
            a, b = router.resolve("cached").replicas
            assert (a.waiting, a.kv_usage, b.waiting, b.kv_usage) == (2.0, 0.9375, 0.0, 0.125)
            down.add("a:1")
            await monitor.check_once()
            assert (a.waiting, a.kv_usage) == (None, None)

    asyncio.run(scenario())
    assert set(seen) == {"a:1", "b:1"}
    assert all(r.waiting is None for name in ("plain", "off") for r in router.resolve(name).replicas)


def test_the_monitor_reads_at_the_shortest_interval_of_its_models() -> None:
    router = Router(
        [
            spec("a", ["http://a:1"], policy="prefix", engine_load_interval_s=3),
            spec("b", ["http://b:1"], policy="prefix", engine_load_interval_s=0.5),
        ]
    )

    async def interval() -> float:
        async with httpx.AsyncClient() as client:
            return EngineLoadMonitor(client, router).interval_s

    assert asyncio.run(interval()) == 0.5


def test_the_gateway_reads_its_prefix_engines_and_routes_away_from_a_full_one() -> None:
    # Two replicas of a `prefix` model; the FAKE engine at a:1 reports a queue and a full cache.
    pages = {"a:1": PAGE, "b:1": PAGE.replace(b"} 2.0", b"} 0.0").replace(b"0.9375", b"0.125")}
    sent_to: list[str] = []

    def fake_engine(request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/metrics":
            return httpx.Response(200, content=pages[host])
        sent_to.append(host)
        answer = {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
        return httpx.Response(200, json=answer)

    config = DeploymentConfig(
        platform="cpu",
        models=[
            ModelSpec(
                name="m",
                endpoints=["http://a:1", "http://b:1"],
                routing=RoutingSpec(policy="prefix", engine_load_interval_s=0.05),
            )
        ],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(fake_engine))) as client:
        deadline = time.monotonic() + 10
        rows = client.get("/engines").json()
        while any(row["engine_kv_usage"] is None for row in rows) and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = client.get("/engines").json()
        gauges = {row["url"]: (row["engine_waiting"], row["engine_kv_usage"]) for row in rows}
        assert gauges == {"http://a:1": (2.0, 0.9375), "http://b:1": (0.0, 0.125)}
        for i in range(4):  # new conversations, all away from the full engine
            body = {"model": "m", "messages": [{"role": "user", "content": f"conversation {i} " * 40}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert sent_to == ["b:1"] * 4


@pytest.mark.parametrize("knob", [{"engine_load": False}, {"balance_kv_threshold": 0.5}])
def test_engine_load_knobs_belong_to_the_prefix_policy(knob: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="applies to policy prefix"):
        RoutingSpec.model_validate({"policy": "least_loaded", **knob})
