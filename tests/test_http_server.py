"""Limits on the connection itself, on a real socket: the gateway served by uvicorn with the
protocol from gateway/http_server.py (as server.py serves it); no engines needed."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from benchmarks.resources import free_port
from gateway.app import create_app
from gateway.config import CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec
from gateway.http_server import http_options


@pytest.fixture
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    spec = GatewaySpec(
        port=port,
        max_header_bytes=2048,
        header_timeout_s=1,
        max_connections=4,
        access_log=False,
        compare=CompareSpec(votes_db=str(tmp_path_factory.mktemp("v") / "v.sqlite3")),
    )
    config = DeploymentConfig(
        platform="cpu", gateway=spec, models=[ModelSpec(name="m", endpoints=["http://127.0.0.1:9"])]
    )
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, **http_options(spec)))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield port
    server.should_exit = True
    thread.join(10)


def read_response(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, object], str]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body), head.decode().lower()


def test_oversized_headers_are_431(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
        status, body, _ = read_response(sock)
    assert status == 431 and body["error"]["code"] == 431  # type: ignore[index]
    ok = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Fine": "a" * 1000})
    assert ok.status_code == 200


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "])
def test_a_client_that_stalls_before_its_headers_end_is_cut_off(port: int, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, _, head = read_response(sock)
        assert status == 408 and "connection: close" in head
        assert 0.8 < time.monotonic() - started < 3
        assert sock.recv(10) == b""  # and closed


def test_connections_beyond_the_limit_get_503_and_the_rest_keep_working(port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            status, body, head = read_response(extra)
        assert status == 503 and "retry-after: 1" in head and body["error"]["code"] == 503  # type: ignore[index]
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(held[0])[0] == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
