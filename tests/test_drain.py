"""Graceful stop (gateway/drain.py, server.py): in-process with a FAKE upstream, then the whole
`server.py` with FAKE engines (tests/fake_vllm: slow streams, start in a second).
tests/test_hardening.py drains a gateway in front of the real engines."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec
from gateway.drain import Drain
from tests.conftest import assert_nothing_left, start_server, suite_port, wait_ready

FAKE = Path(__file__).parent / "fake_vllm"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def fake_upstream(request: httpx.Request) -> httpx.Response:  # a FAKE engine
    if request.url.path == "/health":
        return httpx.Response(200)
    return httpx.Response(200, json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


def test_draining_refuses_new_requests_with_503_and_keeps_probes() -> None:
    config = DeploymentConfig(platform="cpu", models=[ModelSpec(name="m", endpoints=["http://m.fake:1"])])
    drain = Drain(timeout_s=30)
    with TestClient(create_app(config, transport=httpx.MockTransport(fake_upstream), drain=drain)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert client.get("/ready").status_code == 200
        drain.begin()
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/compare")):
            response = client.request(method, path, json=CHAT)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "5"
            assert response.json()["error"]["type"] == "service_unavailable"
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert client.get("/ready").status_code == 503 and client.get("/ready").json()["ready"] is False
        assert client.get("/health").status_code == 200  # alive, just not taking work
        assert client.get("/metrics").status_code == 200


def test_drain_is_finished_when_idle_or_late() -> None:
    drain = Drain(timeout_s=0.3)
    assert not drain.finished()  # not draining at all
    drain.in_flight = 1
    drain.begin()
    assert not drain.finished()
    time.sleep(0.35)
    assert drain.finished()  # waited long enough
    other = Drain(timeout_s=30)
    other.begin()
    assert other.finished()  # nothing in flight
    other.in_flight = 2
    other.abandon()
    assert other.finished()  # a second signal


# --- server.py with FAKE engines --------------------------------------------------------------


def fake_stack_config(directory: Path, offset: int, *, token_delay_s: float) -> tuple[Path, int]:
    env = {"PYTHONPATH": str(FAKE), "FAKE_TOKEN_DELAY_S": str(token_delay_s)}
    engine = {"model": str(FAKE), "max_model_len": 128, "env": env, "shutdown_timeout_s": 1}
    data: dict[str, Any] = {
        "platform": "cpu",
        "gateway": {
            "port": suite_port(offset),
            "drain_timeout_s": 20,
            "compare": {"votes_db": str(directory / "v.db")},
        },
        "models": [
            {"name": "fake-a", "aliases": ["a"], "engine": engine | {"port": suite_port(offset + 1)}},
            {"name": "fake-b", "engine": engine | {"port": suite_port(offset + 2)}},
        ],
    }
    path = directory / "fake.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, suite_port(offset)


class Stream(threading.Thread):
    """A streamed chat through the gateway, read line by line in the background."""

    def __init__(self, url: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.tokens = url, tokens
        self.lines: list[str] = []
        self.first = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        body = CHAT | {"model": "a", "stream": True, "max_tokens": self.tokens}
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc
            self.first.set()


@contextlib.contextmanager
def fake_stack(
    directory: Path, offset: int, *, token_delay_s: float
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`server.py` with two FAKE engines, ready; afterwards, nothing of it may be left running."""
    config, port = fake_stack_config(directory, offset, token_delay_s=token_delay_s)
    url = f"http://127.0.0.1:{port}"
    process, log = start_server(config, directory / "logs")
    tree = [psutil.Process(process.pid)]
    try:
        wait_ready(url, process, log, deadline_s=60)
        tree += psutil.Process(process.pid).children(recursive=True)
        assert len(tree) >= 5  # server, two engines, their children
        yield url, process, log
    finally:
        if process.poll() is None:
            process.kill()
        assert_nothing_left(tree, after="the test")


def test_sigterm_lets_a_stream_in_flight_finish_then_stops_everything(tmp_path: Path) -> None:
    with fake_stack(tmp_path, 230, token_delay_s=0.1) as (url, process, log):
        stream = Stream(url, tokens=30)  # ~3 s of tokens
        stream.start()
        assert stream.first.wait(10) and stream.error is None
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 503  # at once
        refused = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=5)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        stream.join(timeout=30)
        assert stream.error is None, stream.error
        assert stream.lines[-1] == "data: [DONE]"
        assert sum(line.startswith("data: {") for line in stream.lines) == 30  # every token, none cut
        assert process.wait(timeout=60) == 0
    text = log.read_text()
    assert "draining: 1 request(s) in flight" in text and "stopping engines" in text


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    with fake_stack(tmp_path, 240, token_delay_s=0.5) as (url, process, log):
        stream = Stream(url, tokens=100)  # 50 s of tokens: longer than anyone waits here
        stream.start()
        assert stream.first.wait(10)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.poll() is None  # draining
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - stopped_at < 10  # not the 20 s drain, nor the 50 s stream
    assert "again: stopping now" in log.read_text()
