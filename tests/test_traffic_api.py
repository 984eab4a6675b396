"""Public traffic names in-process against a FAKE upstream (httpx.MockTransport), no engines:
routing by the canary, mirror copies and their pair records, runtime settings, the pairs API,
review, votes and the live tally. tests/test_traffic.py drives the same against real engines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import (
    AdmissionSpec,
    CompareSpec,
    DeploymentConfig,
    GatewaySpec,
    ModelSpec,
    SamplingDefaults,
    TrafficSpec,
)

R1_URL, QWEN_URL = "http://r1.fake:1", "http://qwen.fake:2"


class FakeEngines:
    """A FAKE pair of engines: each answers with its own name; records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.fail_r1 = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        self.seen.append((str(request.url.host), body))
        name = body["model"]
        if self.fail_r1 and name == "r1-tiny":
            return httpx.Response(
                400, json={"error": {"message": "r1 refuses", "type": "BadRequestError", "code": 400}}
            )
        text = f"{name} answers"
        usage = {"prompt_tokens": 5, "completion_tokens": 3 if name == "qwen-tiny" else 7}
        if body.get("stream"):
            chunks: list[dict[str, Any]] = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                {"choices": [{"index": 0, "delta": {"content": text[:4]}}]},
                {"choices": [{"index": 0, "delta": {"content": text[4:]}, "finish_reason": "stop"}]},
                {"choices": [], "usage": usage},
            ]
            events = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
            return httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if name == "r1-tiny":
            message["reasoning"] = "thinking it over"
        answer = {"model": name, "choices": [{"message": message, "finish_reason": "stop"}], "usage": usage}
        return httpx.Response(200, json=answer)


def make_client(tmp_path: Path, engines: FakeEngines, **traffic: Any) -> TestClient:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(compare=CompareSpec(votes_db=str(tmp_path / "votes.sqlite3"))),
        models=[
            ModelSpec(
                name="r1-tiny",
                aliases=["r1"],
                sampling_defaults=SamplingDefaults(temperature=0.6, top_p=0.95),
                system_prompt="merge_into_user",
                endpoints=[R1_URL],
                admission=AdmissionSpec(max_in_flight=4),
            ),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=[QWEN_URL]),
        ],
        traffic=[TrafficSpec(name="assistant", primary="qwen", candidate="r1", **traffic)],
    )
    return TestClient(create_app(config, transport=httpx.MockTransport(engines)))


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


@pytest.fixture
def client(tmp_path: Path, engines: FakeEngines) -> Iterator[TestClient]:
    with make_client(tmp_path, engines) as test_client:
        yield test_client


def ask(client: TestClient, **extra: Any) -> httpx.Response:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "What is 2+2?"}]} | extra
    return client.post("/v1/chat/completions", json=body, headers=extra.pop("headers", {}))


def traffic(client: TestClient) -> dict[str, Any]:
    [entry] = client.get("/v1/traffic").json()["data"]
    return dict(entry)


def wait_for(check: Callable[[], bool], timeout_s: float = 10) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def pairs(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    return list(client.get("/v1/traffic/pairs", params=params).json()["data"])


def test_the_public_name_answers_with_the_primary_and_nothing_is_mirrored_by_default(
    client: TestClient, engines: FakeEngines
) -> None:
    response = ask(client)
    assert response.status_code == 200 and response.json()["model"] == "qwen-tiny"
    assert [host for host, _ in engines.seen] == ["qwen.fake"]
    entry = traffic(client)
    assert entry["primary"] == "qwen-tiny" and entry["candidate"] == "r1-tiny"
    assert entry["mirror_fraction"] == 0 and entry["split"] is None and entry["settings_from"] == "config"
    assert entry["counters"]["requests"] == {"primary": 1, "candidate": 0}
    assert client.get("/v1/models").json()["data"][0]["id"] != "assistant"  # a route, not a model


def test_mirror_records_a_pair_without_text_unless_asked(client: TestClient, engines: FakeEngines) -> None:
    assert client.put("/v1/traffic/assistant", json={"mirror_fraction": 1}).status_code == 200
    response = ask(client, max_tokens=8, temperature=0, stream_options=None)
    assert response.json()["choices"][0]["message"]["content"] == "qwen-tiny answers"  # the client's answer
    wait_for(lambda: traffic(client)["counters"]["mirror"]["saved"] == 1)
    copy = next(body for host, body in engines.seen if host == "r1.fake")
    assert copy["stream"] is False and "stream_options" not in copy
    assert copy["temperature"] == 0 and copy["top_p"] == 0.95  # the client's fields, then r1's own defaults
    [pair] = pairs(client, name="assistant")
    assert pair["source"] == "live" and pair["name"] == "assistant" and pair["id"].startswith("pair_")
    assert pair["prompt"] is None and len(pair["prompt_sha256"]) == 64 and pair["prompt_chars"] == 12
    qwen, r1 = pair["models"]["qwen-tiny"], pair["models"]["r1-tiny"]
    assert qwen["answer"] is None and r1["answer"] is None and r1["reasoning"] is None
    assert (qwen["answer_chars"], r1["answer_chars"]) == (len("qwen-tiny answers"), len("r1-tiny answers"))
    assert qwen["usage"]["completion_tokens"] == 3 and r1["usage"]["completion_tokens"] == 7
    assert qwen["finish_reason"] == r1["finish_reason"] == "stop"
    assert qwen["timings"]["total_s"] > 0 and r1["timings"]["total_s"] > 0
    assert pair["params"]["answered"] == "qwen-tiny" and pair["params"]["max_tokens"] == 8
    assert client.get("/v1/traffic/review", params={"name": "assistant"}).json()["pair"] is None  # no text


def test_streamed_primary_pair_keeps_text_with_store_prompts(tmp_path: Path, engines: FakeEngines) -> None:
    with make_client(tmp_path, engines, mirror_fraction=1.0, store_prompts=True) as client:
        with client.stream("POST", "/v1/chat/completions", json={
            "model": "assistant", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
        }) as response:  # fmt: skip
            text = response.read().decode()
        assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")  # exactly what a client gets today
        wait_for(lambda: traffic(client)["counters"]["mirror"]["saved"] == 1)
        [pair] = pairs(client)
        qwen, r1 = pair["models"]["qwen-tiny"], pair["models"]["r1-tiny"]
        assert pair["prompt"] == [{"role": "user", "content": "Hi"}]
        assert qwen["answer"] == "qwen-tiny answers" and qwen["usage"]["completion_tokens"] == 3
        assert qwen["timings"]["ttft_s"] is not None and r1["timings"]["ttft_s"] is None  # the copy is not streamed
        assert r1["answer"] == "r1-tiny answers" and r1["reasoning"] == "thinking it over"
        metrics = client.get("/metrics").text
        labels = 'arm="primary",model="qwen-tiny",name="assistant"'
        assert f"gateway_traffic_requests_total{{{labels}}} 1.0" in metrics
        assert f"gateway_traffic_time_to_first_token_seconds_count{{{labels}}} 1.0" in metrics
        tokens = 'gateway_traffic_tokens_total{arm="primary",kind="completion",model="qwen-tiny",name="assistant"} 3.0'
        assert tokens in metrics
        assert 'gateway_mirror_copies_total{model="r1-tiny",name="assistant",outcome="saved"} 1.0' in metrics
        assert 'gateway_engine_requests_total{model="r1-tiny",route="mirror",status="200"} 1.0' in metrics


def test_review_vote_once_and_the_live_tally(tmp_path: Path, engines: FakeEngines) -> None:
    with make_client(tmp_path, engines, mirror_fraction=1.0, store_prompts=True) as client:
        ask(client)
        wait_for(lambda: traffic(client)["counters"]["mirror"]["saved"] == 1)
        review = client.get("/v1/traffic/review", params={"name": "assistant"}).json()
        pair = review["pair"]
        assert review["counts"] == {"pairs": 1, "reviewable": 1, "voted": 0}
        assert {pair["left"]["model"], pair["right"]["model"]} == {"qwen-tiny", "r1-tiny"}
        vote = {"pair_id": pair["id"], "left": pair["left"]["model"], "right": pair["right"]["model"], "vote": "tie"}
        saved = client.post("/v1/traffic/votes", json=vote)
        assert saved.status_code == 200, saved.text
        assert saved.json()["tally"]["total_votes"] == 1 and saved.json()["tally"]["pairs"][0]["ties"] == 1
        again = client.post("/v1/traffic/votes", json=vote | {"vote": "left"})
        assert again.status_code == 409 and again.json()["error"]["code"] == 409
        assert client.get("/v1/traffic/tally").json()["total_votes"] == 1
        assert client.get("/v1/compare/votes").json()["total_votes"] == 0  # a separate tally
        assert client.get("/v1/traffic/review", params={"name": "assistant"}).json()["pair"] is None
        assert pairs(client)[0]["vote"] == {"left": vote["left"], "right": vote["right"], "outcome": "tie"}


def test_a_failing_candidate_is_recorded_and_never_reaches_the_client(tmp_path: Path, engines: FakeEngines) -> None:
    engines.fail_r1 = True
    with make_client(tmp_path, engines, mirror_fraction=1.0, store_prompts=True) as client:
        assert ask(client).status_code == 200
        wait_for(lambda: traffic(client)["counters"]["mirror"]["saved"] == 1)
        assert traffic(client)["counters"]["mirror"]["failed"] == 1
        [pair] = pairs(client)
        assert pair["models"]["r1-tiny"]["status"] == 400
        assert pair["models"]["r1-tiny"]["error"]["message"] == "r1 refuses"
        assert client.get("/v1/traffic/review", params={"name": "assistant"}).json()["pair"] is None  # not fair


def test_the_canary_is_sticky_per_user_and_session(client: TestClient) -> None:
    client.put("/v1/traffic/assistant", json={"split": {"qwen": 1, "r1": 1}})
    for user in ("alice", "bob", "carol", "dave"):
        models = {ask(client, user=user).json()["model"] for _ in range(4)}
        assert len(models) == 1
    by_session = {ask(client, headers={"X-Session-Id": "conv-9"}).json()["model"] for _ in range(4)}
    assert len(by_session) == 1
    chosen = {ask(client, user=f"user-{i}").json()["model"] for i in range(40)}
    assert chosen == {"qwen-tiny", "r1-tiny"}
    client.put("/v1/traffic/assistant", json={"split": {"r1": 1}})
    assert {ask(client, user=f"user-{i}").json()["model"] for i in range(5)} == {"r1-tiny"}
    client.put("/v1/traffic/assistant", json={"split": None})
    assert {ask(client, user=f"user-{i}").json()["model"] for i in range(5)} == {"qwen-tiny"}


def test_settings_change_at_runtime_are_stored_and_reset(client: TestClient, tmp_path: Path) -> None:
    moved = client.put("/v1/traffic/assistant", json={"mirror_fraction": 0.25, "split": {"qwen-tiny": 3, "r1": 1}})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["mirror_fraction"] == 0.25 and body["split"] == {"qwen-tiny": 3, "r1-tiny": 1}
    assert body["candidate_share"] == 0.25 and body["settings_from"] == "runtime"
    assert client.put("/v1/traffic/assistant", json={"mirror_fraction": 0.5}).json()["split"] == {
        "qwen-tiny": 3,
        "r1-tiny": 1,
    }  # a field left out stays
    # A second gateway on the same database starts with the stored settings.
    with make_client(tmp_path, FakeEngines()) as other:
        assert traffic(other)["mirror_fraction"] == 0.5 and traffic(other)["settings_from"] == "runtime"
    reset = client.delete("/v1/traffic/assistant/settings").json()
    assert reset["mirror_fraction"] == 0 and reset["split"] is None and reset["settings_from"] == "config"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, None),
        ({"mirror_fraction": 2}, "mirror_fraction"),
        ({"mirror_fraction": None}, None),
        ({"mirror_fraction": "half"}, "mirror_fraction"),
        ({"split": {"gpt-4": 1}}, "split"),
        ({"split": {"qwen": -1, "r1": 2}}, "split"),
        ({"split": {"qwen": 0}}, "split"),
        ({"mirror": 1}, "mirror"),
    ],
)
def test_bad_settings_are_400s(client: TestClient, body: dict[str, Any], param: str | None) -> None:
    response = client.put("/v1/traffic/assistant", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param or param in error["message"]
    assert traffic(client)["settings_from"] == "config"  # nothing changed


def test_strict_json_and_unknown_names(client: TestClient) -> None:
    nan = client.put(
        "/v1/traffic/assistant", content=b'{"mirror_fraction": NaN}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 400
    form = client.put("/v1/traffic/assistant", content=b"mirror_fraction=1", headers={"content-type": "text/plain"})
    assert form.status_code == 400
    missing = client.put("/v1/traffic/nope", json={"mirror_fraction": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert client.get("/v1/traffic/review", params={"name": "nope"}).status_code == 404
    assert client.get("/v1/traffic/pairs/pair_none").status_code == 404
    assert client.get("/v1/traffic/pairs", params={"cursor": "x"}).status_code == 400
    assert client.get("/v1/traffic/pairs", params={"limit": 1000}).status_code == 400
    assert client.delete("/v1/traffic/pairs").status_code == 400  # deleting many needs a name


def test_pairs_page_export_and_delete(tmp_path: Path, engines: FakeEngines) -> None:
    with make_client(tmp_path, engines, mirror_fraction=1.0) as client:
        for _ in range(5):
            ask(client)
            time.sleep(0.01)
        wait_for(lambda: traffic(client)["counters"]["mirror"]["saved"] == 5)
        first = client.get("/v1/traffic/pairs", params={"limit": 2}).json()
        second = client.get("/v1/traffic/pairs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        ids = [p["id"] for p in first["data"] + second["data"]]
        assert len(set(ids)) == 4
        export = client.get("/v1/traffic/pairs", params={"format": "jsonl", "name": "assistant"})
        assert export.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in export.text.splitlines()]
        assert [line["id"] for line in lines][:4] == ids and len(lines) == 5
        assert export.headers["content-disposition"] == 'attachment; filename="assistant-pairs.jsonl"'
        # A control character or a quote in `name` must not reach the header: uvicorn's h11
        # refuses such a header value and drops the connection unanswered (found by the fuzz test).
        odd = client.get("/v1/traffic/pairs", params={"format": "jsonl", "name": 'a"\x1fb'})
        assert (
            odd.status_code == 200 and odd.headers["content-disposition"] == 'attachment; filename="a__b-pairs.jsonl"'
        )
        assert client.delete(f"/v1/traffic/pairs/{ids[0]}").json() == {"id": ids[0], "deleted": True}
        assert client.delete(f"/v1/traffic/pairs/{ids[0]}").status_code == 404
        assert client.delete("/v1/traffic/pairs", params={"name": "assistant"}).json()["deleted"] == 4
        assert pairs(client) == []


def test_other_apis_and_several_choices_are_routed_but_not_mirrored(tmp_path: Path, engines: FakeEngines) -> None:
    with make_client(tmp_path, engines, mirror_fraction=1.0) as client:
        assert client.post("/v1/completions", json={"model": "assistant", "prompt": "x"}).status_code == 200
        assert ask(client, n=2).status_code == 200
        wait_for(lambda: traffic(client)["counters"]["mirror"]["skipped"] == 1)
        assert [host for host, _ in engines.seen] == ["qwen.fake", "qwen.fake"]


def test_every_replica_on_the_database_follows_a_change_and_a_reset(tmp_path: Path) -> None:
    with make_client(tmp_path, FakeEngines()) as one, make_client(tmp_path, FakeEngines()) as two:
        one.put("/v1/traffic/assistant", json={"split": {"qwen": 1, "r1": 3}})
        wait_for(lambda: traffic(two)["candidate_share"] == 0.75, timeout_s=10)  # polled every 2 s
        assert {ask(two, user=f"u{i}").json()["model"] for i in range(30)} == {"qwen-tiny", "r1-tiny"}
        same_users = [ask(one, user=f"u{i}").json()["model"] for i in range(30)]
        assert same_users == [ask(two, user=f"u{i}").json()["model"] for i in range(30)]  # sticky across replicas
        two.delete("/v1/traffic/assistant/settings")
        wait_for(lambda: traffic(one)["settings_from"] == "config", timeout_s=10)
        assert traffic(one)["candidate_share"] == 0


def test_every_traffic_route_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "k-traffic")
    with make_client(tmp_path, FakeEngines()) as client:
        calls = [
            ("GET", "/v1/traffic"),
            ("PUT", "/v1/traffic/assistant"),
            ("DELETE", "/v1/traffic/assistant/settings"),
            ("GET", "/v1/traffic/pairs"),
            ("DELETE", "/v1/traffic/pairs/pair_x"),
            ("GET", "/v1/traffic/review?name=assistant"),
            ("POST", "/v1/traffic/votes"),
            ("GET", "/v1/traffic/tally"),
        ]
        for method, path in calls:
            response = client.request(method, path, json={"mirror_fraction": 1})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == 401
        ok = client.put(
            "/v1/traffic/assistant", json={"mirror_fraction": 1}, headers={"Authorization": "Bearer k-traffic"}
        )
        assert ok.status_code == 200
