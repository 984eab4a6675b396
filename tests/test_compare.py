"""`/v1/compare`: first in-process against FAKE engines (httpx.MockTransport), then, marked
`engines`, against the real test stack's two vLLM engines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway import compare as compare_module
from gateway.admission import AdmissionGate
from gateway.app import create_app
from gateway.compare import Comparer
from gateway.config import CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec, SamplingDefaults
from gateway.dispatch import Dispatcher
from gateway.metrics import GatewayMetrics
from gateway.routing import Router
from gateway.upstream import HttpxUpstream

R1_URL = "http://r1.fake:1"
QWEN_URL = "http://qwen.fake:2"
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# What each fake engine streams: R1 reasons first (under both field names vLLM has used).
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    R1_URL: [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning": "Let me think"}),
        _chunk({"reasoning_content": " carefully."}),
        _chunk({"content": "Paris"}),
        _chunk({"content": "."}, finish="stop"),
        {"choices": [], "usage": USAGE},
    ],
    QWEN_URL: [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "The capital"}),
        _chunk({"content": " is Paris."}, finish="stop"),
        {"choices": [], "usage": USAGE},
    ],
}


class FakeStream(httpx.AsyncByteStream):
    """An engine's SSE body; records whether the gateway closed it."""

    def __init__(self, events: list[bytes], *, endless: bool = False, fail: bool = False) -> None:
        self.events, self.endless, self.fail = events, endless, fail
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            await asyncio.sleep(0.005)  # let the two models' events interleave
            yield event
        while self.endless:
            await asyncio.sleep(0.01)
            yield f"data: {json.dumps(_chunk({'content': ' more'}))}\n\n".encode()
        if self.fail:
            raise httpx.ReadError("engine died mid-stream")

    async def aclose(self) -> None:
        self.closed = True


class FakeEngines:
    """Answers /v1/chat/completions like vLLM would, per engine URL; records what it was sent."""

    def __init__(self) -> None:
        self.scripts = dict(SCRIPTS)
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.down: set[str] = set()
        self.refuse: dict[str, tuple[int, dict[str, Any]]] = {}
        self.broken: set[str] = set()  # streams that die after the first event
        self.endless: set[str] = set()
        self.streams: dict[str, FakeStream] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        self.seen.setdefault(base, []).append(body)
        if base in self.refuse:
            status, payload = self.refuse[base]
            return httpx.Response(status, json=payload)
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in self.scripts[base]] + [b"data: [DONE]\n\n"]
        if base in self.broken or base in self.endless:
            events = events[:3]  # no finish, no [DONE]: then it breaks, or goes on until closed
        stream = FakeStream(events, endless=base in self.endless, fail=base in self.broken)
        self.streams[base] = stream
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})


def fake_config(votes_db: Path) -> DeploymentConfig:
    return DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(compare=CompareSpec(votes_db=str(votes_db), anonymous=False)),
        models=[
            ModelSpec(
                name="r1-tiny",
                aliases=["deepseek-r1"],
                sampling_defaults=SamplingDefaults(temperature=0.6, top_p=0.95),
                system_prompt="merge_into_user",
                endpoints=[R1_URL],
            ),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=[QWEN_URL]),
        ],
    )


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


@pytest.fixture
def client(engines: FakeEngines, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(fake_config(tmp_path / "votes.sqlite3"), transport=httpx.MockTransport(engines))
    with TestClient(app) as test_client:
        yield test_client


def sse_events(text: str) -> list[Any]:
    """The JSON of every `data:` line, with the final [DONE] as the string itself."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ---------- non-streaming ----------


def test_both_models_get_the_same_request_and_seed(client: TestClient, engines: FakeEngines) -> None:
    response = client.post("/v1/compare", json={"prompt": "Capital of France?", "max_tokens": 32, "top_k": 5})
    assert response.status_code == 200, response.text
    r1, qwen = engines.seen[R1_URL][0], engines.seen[QWEN_URL][0]
    assert r1["messages"] == qwen["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert r1["seed"] == qwen["seed"] == response.json()["seed"]  # drawn once for both
    assert r1["max_tokens"] == qwen["max_tokens"] == 32
    assert r1["top_k"] == qwen["top_k"] == 5  # fields the gateway does not know go to both engines
    assert r1["stream"] and r1["stream_options"] == {"include_usage": True}  # timed at the gateway
    assert (r1["model"], qwen["model"]) == ("r1-tiny", "qwen-tiny")


def test_result_separates_reasoning_and_reports_params_and_timings(client: TestClient) -> None:
    response = client.post("/v1/compare", json={"prompt": "Capital of France?", "max_tokens": 32, "seed": 11})
    models = response.json()["models"]
    assert list(models) == ["r1-tiny", "qwen-tiny"]
    r1, qwen = models["r1-tiny"], models["qwen-tiny"]
    assert (r1["reasoning"], r1["content"]) == ("Let me think carefully.", "Paris.")
    assert (qwen["reasoning"], qwen["content"]) == ("", "The capital is Paris.")
    # R1's model-card defaults apply to R1 only, and the response says so.
    assert r1["params"] == {"max_tokens": 32, "seed": 11, "temperature": 0.6, "top_p": 0.95}
    assert r1["defaults_applied"] == {"temperature": 0.6, "top_p": 0.95}
    assert qwen["params"] == {"max_tokens": 32, "seed": 11} and qwen["defaults_applied"] == {}
    for result in (r1, qwen):
        t = result["timings"]
        assert result["finish_reason"] == "stop" and result["usage"] == USAGE and result["error"] is None
        assert 0 < t["ttft_s"] <= t["time_to_answer_s"] <= t["total_s"]
        assert t["output_tokens_per_s"] == pytest.approx(USAGE["completion_tokens"] / t["total_s"], rel=0.01)
    # R1 thinks first, so its first answer token comes after its first token.
    assert r1["timings"]["time_to_answer_s"] > r1["timings"]["ttft_s"]


def test_request_fields_override_model_defaults(client: TestClient, engines: FakeEngines) -> None:
    response = client.post("/v1/compare", json={"prompt": "x", "temperature": 0.2})
    r1 = response.json()["models"]["r1-tiny"]
    assert engines.seen[R1_URL][0]["temperature"] == 0.2
    assert r1["params"]["temperature"] == 0.2 and r1["defaults_applied"] == {"top_p": 0.95}


def test_system_prompt_is_folded_into_the_user_message_for_r1_only(client: TestClient, engines: FakeEngines) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    models = client.post("/v1/compare", json={"messages": messages, "models": ["deepseek-r1", "qwen"]}).json()["models"]
    assert engines.seen[R1_URL][0]["messages"] == [{"role": "user", "content": "Be brief.\n\nHi"}]
    assert engines.seen[QWEN_URL][0]["messages"] == messages
    assert (models["r1-tiny"]["system_prompt"], models["qwen-tiny"]["system_prompt"]) == ("merge_into_user", "keep")
    assert models["r1-tiny"]["requested"] == "deepseek-r1"  # aliases resolve; the key is the served name


# ---------- streaming ----------


def test_stream_tags_events_by_model_and_ends_with_a_summary(client: TestClient) -> None:
    with client.stream("POST", "/v1/compare", json={"prompt": "Capital?", "stream": True, "seed": 3}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]" and events[-2]["type"] == "summary"
    body = events[:-2]
    text = {(m, kind): "" for m in ("r1-tiny", "qwen-tiny") for kind in ("reasoning", "content")}
    for event in body:
        if event["type"] in ("reasoning", "content"):
            text[(event["model"], event["type"])] += event["delta"]
    assert text == {
        ("r1-tiny", "reasoning"): "Let me think carefully.",
        ("r1-tiny", "content"): "Paris.",
        ("qwen-tiny", "reasoning"): "",
        ("qwen-tiny", "content"): "The capital is Paris.",
    }
    ends = [(e["model"], e["type"], e.get("finish_reason")) for e in body if e["type"] in ("done", "error")]
    assert sorted(ends) == [("qwen-tiny", "done", "stop"), ("r1-tiny", "done", "stop")]
    assert [e["type"] for e in body if e["model"] == "r1-tiny"][-1] == "done"  # nothing after a model's end
    summary = events[-2]
    assert summary["seed"] == 3 and set(summary["models"]) == {"r1-tiny", "qwen-tiny"}
    assert summary["models"]["r1-tiny"]["timings"]["ttft_s"] > 0
    assert "content" not in summary["models"]["r1-tiny"]  # the text went out as deltas already


def _stream(client: TestClient, **body: Any) -> list[Any]:
    with client.stream("POST", "/v1/compare", json={"prompt": "Capital?", "stream": True, **body}) as response:
        assert response.status_code == 200
        return sse_events(response.read().decode())


def _outcome(events: list[Any]) -> dict[str, tuple[str, int | None]]:
    return {
        e["model"]: (e["type"], e.get("status")) for e in events if e != "[DONE]" and e["type"] in ("done", "error")
    }


def test_one_engine_down_does_not_stop_the_other(client: TestClient, engines: FakeEngines) -> None:
    engines.down.add(QWEN_URL)
    events = _stream(client)
    assert _outcome(events) == {"r1-tiny": ("done", None), "qwen-tiny": ("error", 503)}
    error = next(e for e in events if e != "[DONE]" and e["type"] == "error")
    assert "qwen-tiny" in error["error"]["message"] and error["error"]["type"] == "engine_unavailable"
    summary = events[-2]["models"]
    assert summary["qwen-tiny"]["status"] == 503 and summary["r1-tiny"]["error"] is None


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, {"error": {"message": "max_tokens is too large", "type": "BadRequestError", "code": 400}}),
        (429, {"error": {"message": "Too many requests", "type": "rate_limit_error", "code": 429}}),
        (500, {"detail": "boom"}),
    ],
)
def test_engine_refusal_is_reported_for_that_model(
    client: TestClient, engines: FakeEngines, status: int, payload: dict[str, Any]
) -> None:
    engines.refuse[R1_URL] = (status, payload)
    models = client.post("/v1/compare", json={"prompt": "x"}).json()["models"]
    r1, qwen = models["r1-tiny"], models["qwen-tiny"]
    assert r1["status"] == status and r1["content"] == ""
    assert r1["error"]["message"] == (payload.get("error") or {}).get("message", payload.get("detail"))
    assert qwen["error"] is None and qwen["content"] == "The capital is Paris."


def test_unknown_model_fails_alone(client: TestClient) -> None:
    events = _stream(client, models=["gpt-4", "qwen"])
    assert _outcome(events) == {"gpt-4": ("error", 404), "qwen-tiny": ("done", None)}
    assert events[-2]["models"]["gpt-4"]["error"]["code"] == 404


def test_stream_that_breaks_midway_keeps_the_partial_answer(client: TestClient, engines: FakeEngines) -> None:
    engines.broken.add(QWEN_URL)
    models = client.post("/v1/compare", json={"prompt": "x"}).json()["models"]
    assert models["qwen-tiny"]["status"] == 502 and "dropped the connection" in models["qwen-tiny"]["error"]["message"]
    assert models["r1-tiny"]["error"] is None and models["r1-tiny"]["content"] == "Paris."


def test_in_band_engine_error_ends_that_model(client: TestClient, engines: FakeEngines) -> None:
    error = {"error": {"message": "engine overloaded", "type": "InternalServerError", "code": 500}}
    engines.scripts[QWEN_URL] = [_chunk({"content": "half"}), error, _chunk({"content": "never seen"})]
    models = client.post("/v1/compare", json={"prompt": "x"}).json()["models"]
    qwen = models["qwen-tiny"]
    assert (qwen["content"], qwen["status"], qwen["error"]["message"]) == ("half", 500, "engine overloaded")
    assert models["r1-tiny"]["content"] == "Paris."


def test_full_admission_gate_is_a_429_for_that_model(engines: FakeEngines) -> None:
    router = Router(fake_config(Path("unused")).models)
    full = AdmissionGate(max_in_flight=1, max_queue=0, queue_timeout_s=1)
    gates = {"r1-tiny": full, "qwen-tiny": AdmissionGate(max_in_flight=1, max_queue=0, queue_timeout_s=1)}

    async def run() -> dict[str, Any]:
        held = await full.acquire()  # someone else holds R1's only slot
        try:
            async with httpx.AsyncClient(transport=httpx.MockTransport(engines)) as client:
                comparer = Comparer(Dispatcher(HttpxUpstream(client), gates, GatewayMetrics()), router)
                return await comparer.complete(comparer.plan({"messages": [{"role": "user", "content": "x"}]}))
        finally:
            held.release()

    models = asyncio.run(run())["models"]
    assert models["r1-tiny"]["status"] == 429 and models["r1-tiny"]["error"]["type"] == "rate_limit_error"
    assert models["qwen-tiny"]["content"] == "The capital is Paris."
    assert gates["qwen-tiny"].in_flight == 0 and full.in_flight == 0  # every slot given back


def test_closing_the_stream_closes_both_upstream_requests(engines: FakeEngines) -> None:
    engines.endless.update({R1_URL, QWEN_URL})
    router = Router(fake_config(Path("unused")).models)

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(engines)) as client:
            gates = {r.name: AdmissionGate(max_in_flight=4, max_queue=0, queue_timeout_s=1) for r in router.routes}
            comparer = Comparer(Dispatcher(HttpxUpstream(client), gates, GatewayMetrics()), router)
            stream = comparer.stream(comparer.plan({"messages": [{"role": "user", "content": "x"}]}))
            seen: list[dict[str, Any]] = []
            async for event in stream:
                seen.append(event)
                if {e["model"] for e in seen if e["type"] == "content"} == {"r1-tiny", "qwen-tiny"}:
                    break
            await stream.aclose()  # what Starlette does when the client disconnects
            await asyncio.sleep(0.05)  # let the cancelled tasks run their cleanup
            # Checked inside the loop: asyncio.run would cancel leftover tasks on its way out.
            assert engines.streams[R1_URL].closed and engines.streams[QWEN_URL].closed
            assert all(r.in_flight == 0 for route in router.routes for r in route.replicas)
            assert all(gate.in_flight == 0 for gate in gates.values())
            return seen

    seen = asyncio.run(run())
    assert not any(e["type"] in ("done", "summary") for e in seen)


# ---------- request validation and the page ----------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": "x", "messages": [{"role": "user", "content": "x"}]},
        {"prompt": "x", "model": "qwen"},
        {"prompt": "x", "models": []},
        {"prompt": "x", "models": ["qwen", "qwen-tiny"]},  # the same model twice
        {"prompt": "x", "max_tokens": 0},
        {"prompt": "x", "n": 2},
        {"messages": [{"role": "robot", "content": "x"}]},
    ],
)
def test_bad_compare_requests_are_openai_400s(client: TestClient, engines: FakeEngines, body: dict[str, Any]) -> None:
    response = client.post("/v1/compare", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert not engines.seen  # nothing reached an engine


def test_page_and_assets_are_served_beside_the_api(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="col-left"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/v1/compare/settings").json() == {"anonymous": False, "models": ["r1-tiny", "qwen-tiny"]}
    for method, path in [("GET", "/v1/nothing"), ("POST", "/v1/nothing"), ("GET", "/static/nothing.js")]:
        response = client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error", path


# ---------- against the real engines (test stack) ----------


def _engine_answer(stack: Any, model: str, body: dict[str, Any]) -> tuple[str, str]:
    """The engine's own non-streaming answer: (reasoning, content)."""
    url = f"{stack.engine_url(model)}/v1/chat/completions"
    message = httpx.post(url, json={"model": model, **body}, timeout=300).json()["choices"][0]["message"]
    return (message.get("reasoning") or message.get("reasoning_content") or ""), (message.get("content") or "")


def _running(stack: Any, model: str) -> float:
    text = httpx.get(f"{stack.engine_url(model)}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:num_requests_running")
    )


def _generated(stack: Any, model: str) -> float:
    text = httpx.get(f"{stack.engine_url(model)}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")
    )


def _poll_running(stack: Any, models: set[str], *, until: Any, timeout_s: float = 10) -> dict[str, float]:
    """`vllm:num_requests_running` per engine, polled until `until` holds for all (or time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = {m: _running(stack, m) for m in sorted(models)}
        if all(until(n) for n in running.values()) or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


GREEDY = {"prompt": "Why is the sky blue?", "max_tokens": 40, "temperature": 0, "seed": 5}


@pytest.mark.engines
def test_real_compare_matches_each_engine_and_reports_defaults(stack: Any) -> None:
    body = {"prompt": "Why is the sky blue?", "max_tokens": 24, "seed": 7}
    response = httpx.post(f"{stack.gateway_url}/v1/compare", json=body, timeout=300)
    assert response.status_code == 200, response.text
    models = response.json()["models"]
    assert list(models) == ["r1-tiny", "qwen-tiny"]
    r1, qwen = models["r1-tiny"], models["qwen-tiny"]
    assert r1["defaults_applied"] == {"temperature": 0.6, "top_p": 0.95} and qwen["defaults_applied"] == {}
    assert r1["params"] == {"max_tokens": 24, "seed": 7, "temperature": 0.6, "top_p": 0.95}
    for result in (r1, qwen):
        assert result["error"] is None, result["error"]
        assert 0 < result["usage"]["completion_tokens"] <= 24
        t = result["timings"]
        assert 0 < t["ttft_s"] <= t["total_s"] and t["output_tokens_per_s"] > 0
    # R1's chat template opens a <think> block and the deepseek_r1 parser splits it out.
    assert r1["reasoning"] and not qwen["reasoning"] and qwen["content"]
    # Same seed and parameters sent straight to each engine give the same text: nothing lost or mixed up.
    same = {"messages": [{"role": "user", "content": body["prompt"]}], "max_tokens": 24, "seed": 7}
    assert _engine_answer(stack, "r1-tiny", same | {"temperature": 0.6, "top_p": 0.95}) == (
        r1["reasoning"],
        r1["content"],
    )
    assert _engine_answer(stack, "qwen-tiny", same) == ("", qwen["content"])


@pytest.mark.engines
def test_real_stream_keeps_reasoning_apart_and_ends_with_summary(stack: Any) -> None:
    with httpx.stream("POST", f"{stack.gateway_url}/v1/compare", json=GREEDY | {"stream": True}, timeout=300) as r:
        assert r.status_code == 200
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]" and events[-2]["type"] == "summary"
    text: dict[tuple[str, str], str] = {}
    for event in events[:-2]:
        if event["type"] in ("reasoning", "content"):
            key = (event["model"], event["type"])
            text[key] = text.get(key, "") + event["delta"]
    assert _outcome(events) == {"r1-tiny": ("done", None), "qwen-tiny": ("done", None)}
    same = {"messages": [{"role": "user", "content": GREEDY["prompt"]}], "max_tokens": 40, "temperature": 0, "seed": 5}
    assert (text.get(("r1-tiny", "reasoning"), ""), text.get(("r1-tiny", "content"), "")) == _engine_answer(
        stack, "r1-tiny", same
    )
    assert text.get(("r1-tiny", "reasoning"))  # R1 did reason, and it came as reasoning events
    assert ("qwen-tiny", "reasoning") not in text and text[("qwen-tiny", "content")] == _engine_answer(
        stack, "qwen-tiny", same
    )[1]
    summary = events[-2]["models"]
    assert summary["qwen-tiny"]["usage"]["completion_tokens"] > 0 and summary["r1-tiny"]["timings"]["ttft_s"] > 0


@pytest.mark.engines
def test_real_unknown_model_fails_while_the_other_completes(stack: Any) -> None:
    body = GREEDY | {"stream": True, "models": ["r1", "no-such-model"]}
    with httpx.stream("POST", f"{stack.gateway_url}/v1/compare", json=body, timeout=300) as r:
        events = sse_events(r.read().decode())
    assert _outcome(events) == {"r1-tiny": ("done", None), "no-such-model": ("error", 404)}
    assert events[-2]["models"]["r1-tiny"]["usage"]["completion_tokens"] > 0


@pytest.mark.engines
def test_real_prompt_too_long_for_one_template_fails_only_there(stack: Any) -> None:
    """Qwen's chat template adds a default system prompt, so the same messages are longer for
    Qwen: a prompt that just fits R1's context window is refused by Qwen's engine alone."""
    url = f"{stack.gateway_url}/v1/compare"
    probe = httpx.post(url, json={"prompt": "sky " * 1000, "max_tokens": 1}, timeout=300).json()["models"]
    overhead = {m: r["usage"]["prompt_tokens"] - 1000 for m, r in probe.items()}  # each " sky" is one token
    assert overhead["qwen-tiny"] > overhead["r1-tiny"] + 8, overhead
    max_len = stack.config.find_model("r1-tiny").engine.max_model_len
    words = max_len - 4 - overhead["r1-tiny"]  # R1's prompt: 4 tokens below the limit; Qwen's: over it
    body = {"prompt": "sky " * words, "max_tokens": 2, "temperature": 0}
    models = httpx.post(url, json=body, timeout=300).json()["models"]
    qwen, r1 = models["qwen-tiny"], models["r1-tiny"]
    assert qwen["status"] == 400 and str(max_len) in qwen["error"]["message"], qwen
    assert r1["error"] is None and r1["usage"]["prompt_tokens"] == max_len - 4
    assert r1["usage"]["completion_tokens"] > 0 and r1["timings"]["total_s"] > 0


@pytest.mark.engines
def test_real_client_disconnect_stops_both_generations(stack: Any) -> None:
    max_tokens = 1800
    body = {"prompt": "Count to a million.", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    models = {"r1-tiny", "qwen-tiny"}
    before = {m: _generated(stack, m) for m in models}
    started: set[str] = set()
    running: dict[str, float] = {}
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=300) as client, client.stream("POST", f"{stack.gateway_url}/v1/compare", json=body) as r:
        # Keep reading (leaving the iterator would close the connection) until both engines
        # report the request running; their gauges can lag behind the stream on a busy machine.
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[len("data: ") :])
                assert event["type"] not in ("error", "summary"), event
                started.add(event["model"])
            if started == models:
                running = {m: _running(stack, m) for m in models}
                if all(n >= 1 for n in running.values()) or time.monotonic() > deadline:
                    break
    assert running == {"r1-tiny": 1, "qwen-tiny": 1}
    # Leaving the loop and the `with` closed the connection mid-stream: both engines must stop within seconds.
    assert _poll_running(stack, models, until=lambda n: n == 0) == {"r1-tiny": 0, "qwen-tiny": 0}
    generated = {m: _generated(stack, m) for m in models}
    time.sleep(1)
    assert {m: _generated(stack, m) for m in models} == generated  # no token after the stop
    assert all(0 < generated[m] - before[m] < max_tokens for m in models), (before, generated)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "x", "temperature": NaN}',
        b'{"prompt": "x", "frequency_penalty": Infinity}',  # a field only the engines would read
        b'{"prompt": "\\ud800 lone surrogate"}',
        b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
    ],
)
def test_not_json_or_not_text_is_a_400_not_an_empty_success(
    client: TestClient, engines: FakeEngines, raw: bytes
) -> None:
    for stream in (False, True):
        body = raw[:-1] + (b', "stream": true}' if stream else b"}")
        response = client.post("/v1/compare", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == 400
    assert not any(engines.seen.values())  # nothing reached an engine


def test_a_bug_inside_one_models_run_is_that_models_error(
    client: TestClient, engines: FakeEngines, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_events = compare_module._events

    def broken(run: Any, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if run.model == "qwen-tiny":
            raise KeyError("a bug")
        return real_events(run, chunk)

    monkeypatch.setattr(compare_module, "_events", broken)
    models = client.post("/v1/compare", json={"prompt": "x"}).json()["models"]
    assert models["qwen-tiny"]["status"] == 500 and "KeyError" in models["qwen-tiny"]["error"]["message"]
    assert models["r1-tiny"]["error"] is None and models["r1-tiny"]["content"] == "Paris."
    events = [e for e in _stream(client) if isinstance(e, dict)]
    error = next(e for e in events if e.get("type") == "error")
    assert (error["model"], error["status"]) == ("qwen-tiny", 500)
    assert events[-1]["type"] == "summary" and events[-1]["id"].startswith("cmp_")
