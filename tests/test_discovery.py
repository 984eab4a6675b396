"""DNS discovery (gateway/discovery.py): every address of an endpoint's name is a replica.

Three levels: the discovery loop against an injected resolver (no network); the whole gateway
in-process (its real aiohttp data path, uvicorn, an injected resolver) in front of FAKE engines
listening on 127.0.0.2-6, with replicas joining and leaving under load; and the same with the
REAL vLLM engine of the session `stack` behind TCP relays on 127.0.0.x (marked `engines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from benchmarks.fake_upstream import FakeAnswers, FakeUpstreamProtocol
from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec
from gateway.discovery import Discovery, address_url
from gateway.metrics import GatewayMetrics
from gateway.routing import ModelRoute, Replica, Router
from tests.conftest import Stack

pytestmark = pytest.mark.anyio

PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "8010"))
ENGINE_PORT = PORT_BASE + 310  # on 127.0.0.2 ... 127.0.0.6, as pods share a port on their own addresses
GATEWAY_PORT = PORT_BASE + 311


class FakeDns:
    """An injected resolver whose answers the test changes; counts lookups."""

    def __init__(self, *addresses: str) -> None:
        self.answers: dict[str, list[str]] = {"engines": list(addresses)}
        self.failing = False
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        if self.failing:
            raise OSError("Temporary failure in name resolution")
        return list(self.answers.get(host, []))

    def set(self, *addresses: str) -> None:
        self.answers["engines"] = list(addresses)


def dns_route(*endpoints: str, **routing: Any) -> tuple[Router, ModelRoute]:
    spec = ModelSpec.model_validate(
        {"name": "m", "endpoints": list(endpoints), "routing": {"discovery": "dns", **routing}}
    )
    router = Router([spec])
    return router, router.resolve("m")


# --- the discovery loop, no network ----------------------------------------------------------


async def test_each_address_is_a_replica_and_lookups_follow_the_name() -> None:
    router, route = dns_route("http://engines:8101", "http://10.9.9.9:8101")
    dns = FakeDns("127.0.0.2", "127.0.0.3")
    changes: list[tuple[list[str], list[str]]] = []
    metrics = GatewayMetrics()

    def changed(_: ModelRoute, joined: list[Replica], left: list[Replica]) -> None:
        changes.append(([r.url for r in joined], [r.url for r in left]))

    discovery = Discovery(router, metrics=metrics, on_change=changed, resolver=dns)
    await discovery.refresh()
    assert [(r.url, r.endpoint) for r in route.replicas] == [
        ("http://127.0.0.2:8101", "http://engines:8101"),
        ("http://127.0.0.3:8101", "http://engines:8101"),
        ("http://10.9.9.9:8101", "http://10.9.9.9:8101"),  # an address is its own replica, never looked up
    ]
    metrics.engine_up.labels("m", "http://127.0.0.2:8101").set(1)
    dns.set("127.0.0.3", "127.0.0.4")
    await discovery.refresh()
    assert changes[-1] == (["http://127.0.0.4:8101"], ["http://127.0.0.2:8101"])
    assert b'url="http://127.0.0.2:8101"' not in metrics.render()[0]  # its series left with it
    assert dns.lookups == 2


async def test_a_failed_or_empty_lookup_keeps_the_last_addresses() -> None:
    router, route = dns_route("http://engines:8101")
    dns = FakeDns("127.0.0.2", "127.0.0.3")
    metrics = GatewayMetrics()
    discovery = Discovery(router, metrics=metrics, resolver=dns)
    await discovery.refresh()
    dns.failing = True
    await discovery.refresh()
    dns.failing = False
    dns.set()
    await discovery.refresh()
    assert [r.url for r in route.routable] == ["http://127.0.0.2:8101", "http://127.0.0.3:8101"]
    assert b'gateway_discovery_failures_total{model="m"} 2.0' in metrics.render()[0]


async def test_a_slow_resolver_times_out_like_a_failure() -> None:
    router, route = dns_route("http://engines:8101")

    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["127.0.0.2"]

    discovery = Discovery(router, metrics=GatewayMetrics(), resolver=hangs, lookup_timeout_s=0.05)
    started = time.monotonic()
    await discovery.refresh()
    assert time.monotonic() - started < 1 and route.replicas == []


async def test_run_looks_up_again_every_interval() -> None:
    router, route = dns_route("http://engines:8101", resolve_interval_s=0.05)
    dns = FakeDns("127.0.0.2")
    discovery = Discovery(router, metrics=GatewayMetrics(), resolver=dns)
    task = asyncio.create_task(discovery.run())
    try:
        dns.set("127.0.0.5")
        deadline = time.monotonic() + 5
        while [r.url for r in route.routable] != ["http://127.0.0.5:8101"]:
            assert time.monotonic() < deadline, "the new address was never picked up"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()


def test_address_urls() -> None:
    assert address_url("http://r1-distill:8101", "10.1.2.3") == "http://10.1.2.3:8101"
    assert address_url("http://r1-distill:8101/engine", "fd00::7") == "http://[fd00::7]:8101/engine"
    assert address_url("http://r1-distill", "10.1.2.3") == "http://10.1.2.3"


async def test_system_resolver_finds_localhost() -> None:
    from gateway.discovery import system_resolver  # noqa: PLC0415

    assert "127.0.0.1" in await system_resolver("localhost", 80)


# --- the gateway in-process, FAKE engines on 127.0.0.x ----------------------------------------


@dataclass
class FakeEngine:
    """A FAKE engine (benchmarks/fake_upstream.py, not vLLM) on one address, counting requests."""

    address: str
    requests: int = 0
    running: int = 0
    transports: list[Any] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self, port: int, *, tokens: int = 10, token_delay_s: float = 0.02) -> None:
        engine = self
        answers = FakeAnswers(tokens)

        class Counting(FakeUpstreamProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                engine.transports.append(transport)

            def respond(self, request_line: list[str], body: bytes) -> None:
                if request_line[0] == "POST":
                    engine.requests += 1
                super().respond(request_line, body)

            async def trickle(self) -> None:
                # Running from the request until its [DONE] event: then the gateway lets the
                # next request in, while this stream's chunked-encoding end is still to come.
                engine.running += 1
                running = True
                try:
                    self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                    self.transport.write(b"transfer-encoding: chunked\r\n\r\n")
                    for chunk in self.answers.stream_chunks:
                        await asyncio.sleep(self.token_delay_s)
                        if self.transport.is_closing():
                            return
                        self.transport.write(chunk)
                        if b"[DONE]" in chunk:
                            engine.running -= 1
                            running = False
                finally:
                    if running:
                        engine.running -= 1

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Counting(answers, token_delay_s), self.address, port)

    def stop(self) -> None:
        """The pod is gone: no listener, every connection cut."""
        if self.server is not None:
            self.server.close()
        for transport in self.transports:
            transport.abort()


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "the gateway did not start"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def dns_config(model: str, *, max_in_flight: int = 64, **routing: Any) -> DeploymentConfig:
    return DeploymentConfig.model_validate(
        {
            "platform": "cpu",
            "gateway": {"access_log": False, "health_interval_s": 0.2},
            "models": [
                {
                    "name": model,
                    "endpoints": [f"http://engines:{ENGINE_PORT}"],
                    "admission": {"max_in_flight": max_in_flight, "max_queue": 256},
                    "routing": {"discovery": "dns", "resolve_interval_s": 0.2, **routing},
                }
            ],
        }
    )


@dataclass
class Load:
    """Closed-loop clients until stopped: every failure is kept."""

    send: Callable[[int], Awaitable[None]]
    workers: int
    done: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]

    async def _worker(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                await self.send(i * 100_000 + n)
                self.done += 1
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            n += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def engine_urls(client: httpx.AsyncClient, gateway: str) -> set[str]:
    return {row["url"] for row in (await client.get(f"{gateway}/engines")).json()}


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def url_of(address: str, port: int = ENGINE_PORT) -> str:
    return f"http://{address}:{port}"


@pytest.mark.parametrize("policy", ["least_loaded", "session", "prefix"])
async def test_replicas_join_and_leave_under_load_without_a_failed_request(policy: str) -> None:
    """Under every policy: pods that join get requests, pods that leave finish theirs and get no
    more, no request fails, admission follows the pods, /engines and /metrics show them."""
    engines = {a: FakeEngine(a) for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")}
    for engine in engines.values():
        await engine.start(ENGINE_PORT)
    dns = FakeDns("127.0.0.2")
    app = create_app(dns_config("fake", max_in_flight=2, policy=policy), resolver=dns)
    peaks: list[int] = []  # requests running on all fakes together, sampled

    async def sample() -> None:
        while True:
            peaks.append(sum(e.running for e in engines.values()))
            await asyncio.sleep(0.005)

    async with serving(app, GATEWAY_PORT) as gateway, httpx.AsyncClient(timeout=30) as client:

        async def send(i: int) -> None:
            # Each worker is a user in conversations of three turns: what session and prefix key on.
            worker, n = divmod(i, 100_000)
            question = f"Conversation {worker}-{n // 3}, long enough for the prefix tree to match. " * 3
            messages = [{"role": "user", "content": question}, {"role": "user", "content": f"Turn {n % 3}."}]
            body = {"model": "fake", "messages": messages, "user": f"user-{worker}", "stream": True}
            async with client.stream("POST", f"{gateway}/v1/chat/completions", json=body) as response:
                text = (await response.aread()).decode()
            if response.status_code != 200 or "[DONE]" not in text or '"error"' in text:
                raise AssertionError(f"{response.status_code}: {text[-200:]}")

        load = Load(send, workers=8)
        load.start()
        sampler = asyncio.create_task(sample())
        try:
            await asyncio.sleep(1.0)
            one_replica_peak = max(peaks)
            peaks.clear()

            dns.set("127.0.0.2", "127.0.0.3", "127.0.0.4")  # two pods join
            await wait_for(lambda: _has(client, gateway, 3), "two replicas to join")
            before = {a: e.requests for a, e in engines.items()}
            await asyncio.sleep(1.0)
            assert all(engines[a].requests > before[a] for a in ("127.0.0.3", "127.0.0.4")), "new pods got nothing"
            three_replica_peak = max(peaks)

            for gone, now in (("127.0.0.2", ("127.0.0.3", "127.0.0.4")), ("127.0.0.3", ("127.0.0.4", "127.0.0.5"))):
                dns.set(*now)  # a pod leaves DNS (its preStop), keeps serving what it has ...
                await wait_for(functools.partial(_lacks, client, gateway, url_of(gone)), f"{gone} to drain")
                served = engines[gone].requests
                engines[gone].stop()  # ... and stops once drained
                await asyncio.sleep(0.8)
                assert engines[gone].requests == served, f"{gone} got requests after it left"
        finally:
            sampler.cancel()
            await load.stop()
        assert load.failures == [] and load.done > 30, (load.done, load.failures[:5])
        assert engines["127.0.0.5"].requests > 0
        # Admission is max_in_flight per discovered replica: 2 with one pod, up to 6 with three.
        assert one_replica_peak <= 2 < three_replica_peak <= 6, (one_replica_peak, three_replica_peak)
        rows = (await client.get(f"{gateway}/engines")).json()
        assert {(r["url"], r["endpoint"], r["state"]) for r in rows} == {
            (url_of(a), f"http://engines:{ENGINE_PORT}", "ready") for a in ("127.0.0.4", "127.0.0.5")
        }
        metrics = (await client.get(f"{gateway}/metrics")).text
        up = set(re.findall(r'gateway_engine_up\{model="fake",url="([^"]+)"\} 1\.0', metrics))
        assert up == {url_of("127.0.0.4"), url_of("127.0.0.5")}, metrics
        assert 'gateway_replicas{model="fake"} 2.0' in metrics
        reason = {"least_loaded": "least_loaded", "session": "sticky", "prefix": "cache_hit"}[policy]
        assert f'gateway_routing_decisions_total{{model="fake",reason="{reason}"}}' in metrics  # the policy chose
    for engine in engines.values():
        engine.stop()


async def _has(client: httpx.AsyncClient, gateway: str, count: int) -> bool:
    return len(await engine_urls(client, gateway)) == count


async def _lacks(client: httpx.AsyncClient, gateway: str, url: str) -> bool:
    return url not in await engine_urls(client, gateway)


async def test_a_model_without_replicas_is_not_ready_and_answers_503() -> None:
    dns = FakeDns()  # the name resolves to nothing yet
    app = create_app(dns_config("fake"), resolver=dns)
    async with serving(app, GATEWAY_PORT) as gateway, httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{gateway}/ready")).status_code == 503
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        response = await client.post(f"{gateway}/v1/chat/completions", json=body)
        assert response.status_code == 503 and response.headers["retry-after"]
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# --- REAL engines behind relays on 127.0.0.x ----------------------------------------------------


@dataclass
class Relay:
    """A TCP relay on `address` to the real engine: what a pod address is to the gateway.
    Counts the chat requests that went through it."""

    address: str
    target: tuple[str, int]
    chats: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, self.address, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.chats += data.count(b"POST /v1/chat/completions")
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, count=True), pipe(up_reader, writer, count=False))

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.transport.abort()


@pytest.mark.engines
async def test_real_engine_pods_join_and_leave_under_load(stack: Stack) -> None:
    model = stack.model_names()[1]
    engine = httpx.URL(stack.engine_url(model))
    relays = {a: Relay(a, (str(engine.host), int(engine.port or 80))) for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    for relay in relays.values():
        await relay.start(ENGINE_PORT)
    dns = FakeDns("127.0.0.2", "127.0.0.3")
    app = create_app(dns_config(model, policy="prefix"), resolver=dns)
    try:
        async with serving(app, GATEWAY_PORT) as gateway, httpx.AsyncClient(timeout=60) as client:
            sdk = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)

            # The prefix policy keeps a conversation on the pod that holds its history.
            messages: list[Any] = [{"role": "system", "content": "You are a terse assistant. " * 20}]
            before = {a: r.chats for a, r in relays.items()}
            for turn in range(4):
                messages.append({"role": "user", "content": f"Question {turn}: name a colour."})
                reply = await sdk.chat.completions.create(model=model, messages=messages, max_tokens=8)
                messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            used = [a for a, r in relays.items() if r.chats > before[a]]
            assert len(used) == 1 and relays[used[0]].chats - before[used[0]] == 4, used

            async def send(i: int) -> None:
                stream = await sdk.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"Count to {i % 7 + 3}."}],
                    max_tokens=16,
                    stream=True,
                )
                chunks = [chunk async for chunk in stream]
                assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")

            load = Load(send, workers=6)
            load.start()
            try:
                await asyncio.sleep(2)
                dns.set("127.0.0.2", "127.0.0.3", "127.0.0.4")
                await wait_for(lambda: _has(client, gateway, 3), "a pod to join")
                joined_at = relays["127.0.0.4"].chats

                async def new_pod_served() -> bool:
                    return relays["127.0.0.4"].chats > joined_at

                # Under load (CI, another suite beside it) the first request can take longer than a
                # fixed few seconds to reach the new pod: wait for it, with a deadline.
                await wait_for(new_pod_served, "the new pod to get a request", 30)
                dns.set("127.0.0.3", "127.0.0.4")
                await wait_for(lambda: _lacks(client, gateway, url_of("127.0.0.2")), "127.0.0.2 to drain", 60)
                served = relays["127.0.0.2"].chats
                relays["127.0.0.2"].stop()
                await asyncio.sleep(3)
                assert relays["127.0.0.2"].chats == served
            finally:
                await load.stop()
            assert load.failures == [] and load.done > 10, (load.done, load.failures[:5])
            metrics = (await client.get(f"{gateway}/metrics")).text
            assert f'gateway_routing_decisions_total{{model="{model}",reason="cache_hit"}}' in metrics
    finally:
        for relay in relays.values():
            relay.stop()
