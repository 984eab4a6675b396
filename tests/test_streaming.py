"""Streams give back everything they hold on every path: tested on a real socket, with the
gateway served by uvicorn (as server.py serves it) in front of a FAKE upstream (aiohttp).

The path that used to leak: on one keep-alive connection a client pipelines a non-streamed
answer of several MB that it never reads, then a stream, then resets the connection. The
stream's response start waits for the socket to drain and is cancelled before its body began;
the admission slot and the engine connection must still be given back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from aiohttp import web

from benchmarks.resources import free_port
from gateway.app import create_app
from gateway.config import AdmissionSpec, CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec
from gateway.http_server import http_options

BIG_ANSWER = "x" * (8 << 20)  # far more than a socket buffer holds


@dataclass
class FakeEngineStats:
    open_streams: int = 0


def fake_engine(stats: FakeEngineStats) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.Response()

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            answer = {"choices": [{"message": {"content": BIG_ANSWER}}], "usage": {"prompt_tokens": 1}}
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        stats.open_streams += 1
        try:
            for _ in range(600):  # a slow engine: one token every 50 ms for 30 s
                chunk = {"choices": [{"index": 0, "delta": {"content": "tok"}, "text": "tok"}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await asyncio.sleep(0.05)
        finally:
            stats.open_streams -= 1
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    return app


@dataclass
class Served:
    url: str
    port: int
    stats: FakeEngineStats


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    engine_port, gateway_port = free_port(), free_port()
    admission = AdmissionSpec(max_in_flight=1, max_queue=0, queue_timeout_s=1)
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(
            port=gateway_port,
            access_log=False,
            compare=CompareSpec(votes_db=str(tmp_path_factory.mktemp("votes") / "votes.sqlite3")),
        ),
        models=[ModelSpec(name="m", endpoints=[f"http://127.0.0.1:{engine_port}"], admission=admission)],
    )
    stats = FakeEngineStats()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=gateway_port, **http_options(config.gateway))
    )
    ready = threading.Event()

    async def main() -> None:
        runner = web.AppRunner(fake_engine(stats))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", engine_port).start()
        ready.set()
        try:
            await server.serve()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    url = f"http://127.0.0.1:{gateway_port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield Served(url, gateway_port, stats)
    server.should_exit = True
    thread.join(10)


def in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('gateway_requests_in_flight{model="m"}'):
            return float(line.split()[-1])
    raise AssertionError("no in-flight gauge")


def raw_post(path: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a reset, not an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


STREAMS = {
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    "/v1/completions": {"model": "m", "prompt": "hi", "stream": True},
    "/v1/compare": {"prompt": "hi", "stream": True},
}


@pytest.mark.parametrize("path", list(STREAMS))
def test_a_stream_cancelled_before_its_first_byte_gives_its_slot_back(served: Served, path: str) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: the gateway's writes back up
    sock.sendall(raw_post("/v1/chat/completions", big) + raw_post(path, STREAMS[path]))
    deadline = time.monotonic() + 3
    while in_flight(served.url) < 1 and time.monotonic() < deadline:  # the stream takes the slot (compare: later)
        time.sleep(0.05)
    time.sleep(0.3)
    reset(sock)
    deadline = time.monotonic() + 10
    while (in_flight(served.url) > 0 or served.stats.open_streams) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(served.url) == 0, "the admission slot leaked"
    assert served.stats.open_streams == 0, "the engine request was not aborted"
    answer = httpx.post(f"{served.url}/v1/completions", json={"model": "m", "prompt": "hi"}, timeout=30)
    assert answer.status_code == 200  # not a 429: the slot is free again
