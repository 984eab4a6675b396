"""The data-path client (gateway/upstream.py) against a FAKE engine on a real local socket.

Both implementations keep the same contract: the production aiohttp client, and the httpx one
that in-process tests use with a MockTransport. The fake is an aiohttp.web app, not vLLM;
tests/test_hardening.py checks the same behaviour against real engines.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import vllm.envs
from aiohttp import web

from gateway.errors import EngineUnavailable, UpstreamError
from gateway.upstream import ENGINE_KEEPALIVE_S, POOL_KEEPALIVE_S, AiohttpUpstream, HttpxUpstream, Upstream

pytestmark = pytest.mark.anyio

EVENTS = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b"data: [DONE]\n\n"]


class FakeEngine:
    """Records what arrives; `/slow` streams one event every 50 ms until the client leaves."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], Any]] = []
        self.peers: list[int] = []
        self.slow_stream_ended: asyncio.Future[str] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/json", self.json)
        app.router.add_post("/error", self.error)
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/broken", self.broken)
        return app

    async def json(self, request: web.Request) -> web.Response:
        self.seen.append(({k.lower(): v for k, v in request.headers.items()}, await request.json()))
        self.peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.json_response({"ok": True}, headers={"X-Engine": "fake"})

    async def error(self, request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "too long"}}, status=400)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(event)
        await response.write_eof()
        return response

    async def slow(self, request: web.Request) -> web.StreamResponse:
        assert self.slow_stream_ended is not None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(200):  # 10 s at most
                await response.write(EVENTS[0])
                await asyncio.sleep(0.05)
            self.slow_stream_ended.set_result("finished")
        except (ConnectionResetError, asyncio.CancelledError):
            self.slow_stream_ended.set_result("client went away")
            raise
        return response

    async def broken(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(EVENTS[0])
        assert request.transport is not None
        request.transport.abort()  # the engine dies mid-stream
        return response


@pytest.fixture
async def engine() -> AsyncIterator[tuple[FakeEngine, str]]:
    fake = FakeEngine()
    fake.slow_stream_ended = asyncio.get_running_loop().create_future()
    runner = web.AppRunner(fake.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _aiohttp() -> Upstream:
    return AiohttpUpstream(connect_timeout_s=2)


def _httpx() -> Upstream:
    return HttpxUpstream(httpx.AsyncClient(timeout=httpx.Timeout(30, connect=2)))


CLIENTS = pytest.mark.parametrize("make", [_aiohttp, _httpx], ids=["aiohttp", "httpx"])


@CLIENTS
async def test_json_round_trip_keeps_headers_and_reuses_the_connection(
    make: Callable[[], Upstream], engine: tuple[FakeEngine, str]
) -> None:
    fake, url = engine
    upstream = make()
    try:
        for i in range(3):
            response = await upstream.request(
                "POST", f"{url}/json", b'{"n": %d}' % i, {"X-Request-Id": f"r{i}"}, engine="e"
            )
            assert (response.status, json.loads(await response.read())) == (200, {"ok": True})
            assert response.headers["x-engine"] == "fake"
            assert "content-length" not in response.headers  # hop-by-hop: the gateway sets its own
    finally:
        await upstream.aclose()
    assert [body for _, body in fake.seen] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [headers["x-request-id"] for headers, _ in fake.seen] == ["r0", "r1", "r2"]
    assert all(headers["content-type"] == "application/json" for headers, _ in fake.seen)
    assert len(set(fake.peers)) == 1, "keep-alive: one connection for sequential requests"


@CLIENTS
async def test_engine_errors_pass_through(make: Callable[[], Upstream], engine: tuple[FakeEngine, str]) -> None:
    upstream = make()
    try:
        response = await upstream.request("POST", f"{engine[1]}/error", b"{}", {}, engine="e")
        assert response.status == 400
        assert json.loads(await response.read()) == {"error": {"message": "too long"}}
    finally:
        await upstream.aclose()


@CLIENTS
async def test_stream_arrives_whole(make: Callable[[], Upstream], engine: tuple[FakeEngine, str]) -> None:
    upstream = make()
    try:
        response = await upstream.request("POST", f"{engine[1]}/stream", b"{}", {}, engine="e")
        received = b"".join([chunk async for chunk in response.chunks()])
        response.close_now()
    finally:
        await upstream.aclose()
    assert received == b"".join(EVENTS)


@CLIENTS
async def test_closing_an_unfinished_stream_drops_the_connection(
    make: Callable[[], Upstream], engine: tuple[FakeEngine, str]
) -> None:
    """How the engine learns that the client left: its connection closes, so it stops."""
    fake, url = engine
    upstream = make()
    try:
        response = await upstream.request("POST", f"{url}/slow", b"{}", {}, engine="e")
        chunks = response.chunks().__aiter__()
        await chunks.__anext__()
        response.close_now()
        assert fake.slow_stream_ended is not None
        assert await asyncio.wait_for(fake.slow_stream_ended, 5) == "client went away"
    finally:
        await upstream.aclose()


@CLIENTS
async def test_engine_dying_mid_stream_is_an_upstream_error(
    make: Callable[[], Upstream], engine: tuple[FakeEngine, str]
) -> None:
    upstream = make()
    try:
        response = await upstream.request("POST", f"{engine[1]}/broken", b"{}", {}, engine="e")
        with pytest.raises(UpstreamError, match="dropped the connection"):
            async for _ in response.chunks():
                pass
        response.close_now()
    finally:
        await upstream.aclose()


@CLIENTS
async def test_nothing_listening_is_engine_unavailable(make: Callable[[], Upstream]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        upstream = make()
        try:
            with pytest.raises(EngineUnavailable, match="not reachable") as caught:
                await upstream.request("POST", f"http://127.0.0.1:{port}/json", b"{}", {}, engine="r1-tiny")
        finally:
            await upstream.aclose()
    assert caught.value.status_code == 503 and "r1-tiny" in caught.value.message


class ClosingEngine:
    """A FAKE engine on a raw socket that answers the first `answered` requests on each connection
    and closes the connection when the next one arrives, without answering: what a client sees
    when it reuses a pooled connection just as vLLM's keep-alive timeout closes it."""

    def __init__(self, answered: int) -> None:
        self.answered = answered
        self.connections = 0
        self.dropped = 0
        self.served: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(self.answered):
                body = await self._read_request(reader)
                if body is None:
                    return
                self.served.append(body)
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
                )
                await writer.drain()
            if await self._read_request(reader) is not None:
                self.dropped += 1
        finally:
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return await reader.readexactly(length)


@pytest.fixture
async def closing_engine(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ClosingEngine, str]]:
    fake = ClosingEngine(answered=request.param)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield fake, f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("closing_engine", [1], indirect=True)
async def test_a_pooled_connection_closed_under_a_request_is_sent_again_on_a_new_one(
    closing_engine: tuple[ClosingEngine, str],
) -> None:
    """The CI failure of stop 23 ("Engine 'r1-tiny' closed the connection: Can not write request
    body"): the engine was fine, the pooled connection was not. The request must succeed."""
    fake, url = closing_engine
    resent: list[str] = []
    upstream = AiohttpUpstream(connect_timeout_s=2, on_resend=resent.append)
    try:
        for i in range(3):
            response = await upstream.request("POST", f"{url}/json", b'{"n": %d}' % i, {}, engine="e")
            assert (response.status, json.loads(await response.read())) == (200, {"ok": True})
    finally:
        await upstream.aclose()
    assert fake.served == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}'], "each request answered once"
    # request 1 met the closing pooled connection and went again on a new one; request 2 then
    # found the pool empty and opened a third
    assert (fake.connections, fake.dropped, len(resent)) == (3, 1, 1)
    assert resent == ["e"], "told once, with the model's name (gateway_upstream_resent)"


@pytest.mark.parametrize("closing_engine", [0], indirect=True)
async def test_an_engine_closing_every_connection_unanswered_is_unavailable(
    closing_engine: tuple[ClosingEngine, str],
) -> None:
    fake, url = closing_engine
    resent: list[str] = []
    upstream = AiohttpUpstream(connect_timeout_s=2, on_resend=resent.append)
    try:
        with pytest.raises(EngineUnavailable, match="closed the connection") as caught:
            await upstream.request("POST", f"{url}/json", b"{}", {}, engine="r1-tiny")
    finally:
        await upstream.aclose()
    assert caught.value.status_code == 503
    assert (fake.connections, fake.dropped, resent) == (2, 2, ["r1-tiny"]), "sent twice, then given up"


async def test_the_pool_lets_go_of_idle_connections_before_the_engine_does(
    engine: tuple[FakeEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM closes a connection idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE seconds; the pool must not
    hand out one that old. Checked against vLLM's own default, and by behaviour with a short limit."""
    monkeypatch.delenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", raising=False)
    assert vllm.envs.environment_variables["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]() == ENGINE_KEEPALIVE_S
    assert POOL_KEEPALIVE_S < ENGINE_KEEPALIVE_S
    fake, url = engine
    upstream = AiohttpUpstream(connect_timeout_s=2, keepalive_s=0.2)
    try:
        for pause in (0, 0.05, 0.5):
            await asyncio.sleep(pause)
            response = await upstream.request("POST", f"{url}/json", b"{}", {}, engine="e")
            await response.read()
    finally:
        await upstream.aclose()
    assert fake.peers[0] == fake.peers[1] != fake.peers[2], "reused within 0.2 s, not after 0.5 s idle"
