"""Public traffic names against REAL engines: the session `stack` (two vLLM CPU engines) with
extra gateways in front of it, each with its own votes database and a traffic section.

Checks what issue 13 promises: the mirror records pairs for streaming and non-streaming clients;
the client's answer (content, finish reason, usage) is the one it gets without mirroring, at
temperature 0; a full candidate drops mirrors and the primary does not notice; a client that
leaves stops its copy at the engine; the canary is sticky; prompts are not stored unless
enabled; a vote on a live pair counts once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack, extra_gateway, suite_port

pytestmark = pytest.mark.engines

MARKER = "zebra-quartz-"  # in every prompt here, so that the database files can be searched for it
MESSAGES: list[Any] = [{"role": "user", "content": MARKER + "Name three colours of the rainbow."}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 24}


@contextlib.contextmanager
def traffic_gateway(
    stack: Stack, directory: Path, offset: int, *, models: dict[str, Any] | None = None, **traffic: Any
) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"name": "assistant", "primary": "qwen", "candidate": "r1", "mirror_fraction": 1.0} | traffic
    with extra_gateway(
        stack,
        directory,
        port=suite_port(offset),
        gateway={"compare": {"votes_db": str(directory / "votes.sqlite3")}},
        models=models,
        traffic=[spec],
    ) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


def entry(url: str) -> dict[str, Any]:
    [data] = httpx.get(f"{url}/v1/traffic", timeout=10).json()["data"]
    return dict(data)


def wait_for(check: Callable[[], bool], *, timeout: float = 120, interval: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(interval)


def saved(url: str, count: int) -> Callable[[], bool]:
    return lambda: entry(url)["counters"]["mirror"]["saved"] >= count


def stored_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("votes.sqlite3*")))


def answer_of(reply: Any) -> tuple[str, str | None, dict[str, int]]:
    choice = reply.choices[0]
    usage = reply.usage
    return choice.message.content or "", choice.finish_reason, {"p": usage.prompt_tokens, "c": usage.completion_tokens}


def streamed(client: openai.OpenAI, model: str, **extra: Any) -> tuple[str, str | None, dict[str, int]]:
    text, finish, usage = [], None, {}
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY, **extra
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = {"p": chunk.usage.prompt_tokens, "c": chunk.usage.completion_tokens}
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish, usage


def test_mirror_records_pairs_and_the_client_gets_the_same_answer(stack: Stack, tmp_path: Path) -> None:
    direct = sdk(stack.gateway_url)  # the stack's own gateway: mirror off
    baseline = answer_of(direct.chat.completions.create(model="qwen", messages=MESSAGES, **GREEDY))
    baseline_stream = streamed(direct, "qwen")
    assert baseline[0] and baseline_stream == baseline  # greedy: the same either way
    with traffic_gateway(stack, tmp_path / "plain", 61) as url:
        client = sdk(url)
        mirrored = answer_of(client.chat.completions.create(model="assistant", messages=MESSAGES, **GREEDY))
        mirrored_stream = streamed(client, "assistant")
        assert mirrored == baseline and mirrored_stream == baseline_stream
        wait_for(saved(url, 2))
        counters = entry(url)["counters"]["mirror"]
        assert counters["sent"] == 2 and counters["failed"] == 0
        page = httpx.get(f"{url}/v1/traffic/pairs", params={"name": "assistant"}, timeout=10).json()
        streamed_pair, whole_pair = page["data"]  # newest first
        for pair, client_stream in ((whole_pair, False), (streamed_pair, True)):
            qwen, r1 = pair["models"]["qwen-tiny"], pair["models"]["r1-tiny"]
            assert pair["params"]["stream"] is client_stream and pair["params"]["answered"] == "qwen-tiny"
            assert qwen["status"] == r1["status"] == 200
            assert qwen["answer_chars"] == len(baseline[0]) and qwen["finish_reason"] == baseline[1]
            assert (qwen["usage"]["prompt_tokens"], qwen["usage"]["completion_tokens"]) == (
                baseline[2]["p"],
                baseline[2]["c"],
            )
            assert r1["usage"]["completion_tokens"] > 0 and r1["finish_reason"] in ("length", "stop")
            assert r1["timings"]["total_s"] > 0 and qwen["timings"]["total_s"] > 0
            assert (qwen["timings"]["ttft_s"] is not None) is client_stream  # measured where the client streamed
            # Not stored: no prompt, no answers; a hash and lengths instead.
            assert (
                pair["prompt"] is None and qwen["answer"] is None and r1["answer"] is None and r1["reasoning"] is None
            )
            digest = hashlib.sha256(json.dumps(MESSAGES, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
            assert pair["prompt_sha256"] == digest and pair["prompt_chars"] == len(MESSAGES[0]["content"])
        assert MARKER.encode() not in stored_bytes(tmp_path / "plain")  # not in the database files either
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'gateway_engine_requests_total{model="r1-tiny",route="mirror",status="200"} 2.0' in metrics
        assert 'gateway_traffic_requests_total{arm="primary",model="qwen-tiny",name="assistant"} 2.0' in metrics


def test_stored_pairs_are_reviewed_and_a_vote_counts_once(stack: Stack, tmp_path: Path) -> None:
    with traffic_gateway(stack, tmp_path / "stored", 62, store_prompts=True) as url:
        reply = sdk(url).chat.completions.create(model="assistant", messages=MESSAGES, **GREEDY)
        wait_for(saved(url, 1))
        assert MARKER.encode() in stored_bytes(tmp_path / "stored")
        review = httpx.get(f"{url}/v1/traffic/review", params={"name": "assistant"}, timeout=10).json()
        pair = review["pair"]
        assert pair["prompt"] == MESSAGES
        sides = {pair[side]["model"]: pair[side] for side in ("left", "right")}
        assert sides["qwen-tiny"]["answer"] == reply.choices[0].message.content
        assert sides["r1-tiny"]["answer"] is not None and sides["r1-tiny"]["usage"]["completion_tokens"] > 0
        vote = {"pair_id": pair["id"], "left": pair["left"]["model"], "right": pair["right"]["model"], "vote": "left"}
        first = httpx.post(f"{url}/v1/traffic/votes", json=vote, timeout=10)
        assert first.status_code == 200, first.text
        second = httpx.post(f"{url}/v1/traffic/votes", json=vote | {"vote": "right"}, timeout=10)
        assert second.status_code == 409 and second.json()["error"]["code"] == 409
        tally = httpx.get(f"{url}/v1/traffic/tally", timeout=10).json()
        assert tally["total_votes"] == 1 and tally["pairs"][0]["wins"][pair["left"]["model"]] == 1
        export = httpx.get(f"{url}/v1/traffic/pairs", params={"format": "jsonl"}, timeout=10)
        [line] = [json.loads(row) for row in export.text.splitlines()]
        assert line["id"] == pair["id"] and line["vote"]["outcome"] == "left" and line["prompt"] == MESSAGES


def test_a_full_candidate_drops_mirrors_and_the_primary_does_not_notice(stack: Stack, tmp_path: Path) -> None:
    baseline = answer_of(sdk(stack.gateway_url).chat.completions.create(model="qwen", messages=MESSAGES, **GREEDY))
    one_slot = {"r1-tiny": {"admission": {"max_in_flight": 1, "max_queue": 4, "queue_timeout_s": 30}}}
    with traffic_gateway(stack, tmp_path / "full", 63, models=one_slot) as url:
        holding = threading.Event()
        done = threading.Event()

        def hold_r1() -> None:  # a long r1 request holds the candidate's only slot
            body = {"model": "r1", "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
                for _ in response.iter_lines():
                    holding.set()
                    if done.is_set():
                        return

        holder = threading.Thread(target=hold_r1)
        holder.start()
        try:
            assert holding.wait(120)
            client = sdk(url)
            for _ in range(3):
                assert (
                    answer_of(client.chat.completions.create(model="assistant", messages=MESSAGES, **GREEDY))
                    == baseline
                )
            assert streamed(client, "assistant") == baseline
            counters = entry(url)["counters"]["mirror"]
            assert counters["dropped_candidate_full"] == 4 and counters["sent"] == 0
            assert httpx.get(f"{url}/v1/traffic/pairs", timeout=10).json()["data"] == []
        finally:
            done.set()
            holder.join(timeout=120)


def engine_running(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^vllm:num_requests_running(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M))


def test_a_client_that_leaves_stops_its_mirror_copy(stack: Stack, tmp_path: Path) -> None:
    r1_engine = stack.engine_url("r1-tiny")
    with traffic_gateway(stack, tmp_path / "leave", 64) as url:
        body = {"model": "assistant", "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
            lines = response.iter_lines()
            for _ in range(5):
                next(lines)
            wait_for(lambda: engine_running(r1_engine) >= 1, timeout=30)  # the copy runs at the candidate
        # The client is gone: the copy must stop too, and no pair is recorded.
        wait_for(lambda: engine_running(r1_engine) == 0, timeout=30)
        wait_for(lambda: entry(url)["counters"]["mirror"]["cancelled"] == 1, timeout=30)
        assert entry(url)["counters"]["mirror"]["saved"] == 0 and entry(url)["counters"]["mirror_in_flight"] == 0


def test_the_canary_is_sticky_per_user_and_session(stack: Stack, tmp_path: Path) -> None:
    with traffic_gateway(stack, tmp_path / "canary", 65, mirror_fraction=0.0) as url:
        moved = httpx.put(f"{url}/v1/traffic/assistant", json={"split": {"qwen": 1, "r1": 1}}, timeout=10)
        assert moved.status_code == 200 and moved.json()["candidate_share"] == 0.5
        client = sdk(url)
        short: dict[str, Any] = {"max_tokens": 2, "temperature": 0}
        seen: dict[str, set[str]] = {}
        for user in [f"user-{i}" for i in range(12)]:
            for _ in range(3):
                reply = client.chat.completions.create(model="assistant", messages=MESSAGES, user=user, **short)
                seen.setdefault(user, set()).add(reply.model)
        assert all(len(models) == 1 for models in seen.values()), seen
        assert set.union(*seen.values()) == {"qwen-tiny", "r1-tiny"}  # both arms got users
        for session in ("conv-a", "conv-b", "conv-c"):
            models = {
                client.chat.completions.create(
                    model="assistant", messages=MESSAGES, extra_headers={"X-Session-Id": session}, **short
                ).model
                for _ in range(3)
            }
            assert len(models) == 1
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        for arm, model in (("primary", "qwen-tiny"), ("candidate", "r1-tiny")):
            assert re.search(
                rf'gateway_traffic_requests_total{{arm="{arm}",model="{model}",name="assistant"}} [1-9]', metrics
            )
        counts = entry(url)["counters"]["requests"]
        assert counts["primary"] + counts["candidate"] == 12 * 3 + 3 * 3
