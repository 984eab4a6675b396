"""The evaluation run end to end: runner, records, summary, report and the CLI.

- A FAKE gateway (httpx.MockTransport) checks the runner's own logic in-process: prompts and
  sampling per model, both reasoning fields, verdicts, resume, request errors.
- The CLI's refusals need no gateway at all (nor does its refusal to run model-written code
  without the sandbox's namespace isolation, unless confirmed).
- The engines test runs `scripts/eval.py` against the REAL test stack (two vLLM engines behind
  the gateway) on a small sample of every suite. The test models have random weights, so they
  score about 0: the test checks that records and report files are produced and well formed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from evaluation.grading import Grader
from evaluation.records import RecordStore
from evaluation.report import write_report
from evaluation.runner import Evaluator, RunOptions, fetch_models, select_models
from evaluation.sandbox import Sandbox, SandboxLimits
from evaluation.suite_smoke import smoke_items
from evaluation.summary import summarize
from tests.conftest import Stack

ROOT = Path(__file__).resolve().parent.parent
EVAL = [sys.executable, str(ROOT / "scripts" / "eval.py")]
RECORD_FIELDS = {
    "model", "suite", "item_id", "sample", "task", "kind", "grader", "reference", "prompt_family", "messages",
    "request", "content", "reasoning", "answer", "extracted", "correct", "score", "detail", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "error",
}  # fmt: skip

PALINDROME = "\n".join(
    [
        "```python",
        "def is_palindrome(text):",
        "    s = [c.lower() for c in text if c.isalnum()]",
        "    return s == s[::-1]",
        "```",
    ]
)
RIGHT = {"percentage": "So \\boxed{50}.", "palindrome": PALINDROME, "syllogism": "\\boxed{\\text{No}}"}


class FakeGateway:
    """Answers like the gateway: R1 right (reasoning in a separate field), the other model wrong."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_once: set[tuple[str, str]] = set()  # (model, words in the question) -> one HTTP 500

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ready":
            return httpx.Response(200, json={"ready": True})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [
                {"id": "r1-fake", "aliases": ["deepseek-r1"], "max_model_len": 4096, "sampling_defaults": {}},
                {"id": "qwen-fake", "aliases": ["qwen"], "max_model_len": 4096,
                 "sampling_defaults": {"temperature": 0.7, "top_p": 0.8}},
            ]})  # fmt: skip
        body = json.loads(request.content)
        self.bodies.append(body)
        question = body["messages"][-1]["content"]
        failing = next(((m, w) for m, w in self.fail_once if m == body["model"] and w in question), None)
        if failing:
            self.fail_once.discard(failing)
            return httpx.Response(500, json={"error": {"message": "boom"}})
        task = "percentage" if "shirt" in question else "palindrome" if "palindrome" in question else "syllogism"
        if body["model"] == "r1-fake":
            field = "reasoning" if task == "percentage" else "reasoning_content"
            message = {"content": RIGHT[task], field: "Let me think: 42, 17, maybe \\boxed{48}."}
        else:
            message = {"content": "<think>so \\boxed{50}</think>The answer is 48. \\boxed{Yes}"}
        usage = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})


async def _evaluate(gateway: FakeGateway, store: RecordStore, samples: int) -> tuple[Evaluator, dict[str, int]]:
    transport = httpx.MockTransport(gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.fake") as client:
        models = select_models(await fetch_models(client), None)
        grader = Grader(Sandbox(SandboxLimits(timeout_s=5)))
        evaluator = Evaluator(client, models, grader, store, RunOptions(samples=samples, progress=False))
        tally = await evaluator.run(smoke_items())
    return evaluator, dict(tally)


def test_runner_with_a_fake_gateway_records_verdicts_and_resumes(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.fail_once.add(("qwen-fake", "All roses are flowers"))
    store = RecordStore(tmp_path / "records.jsonl")
    evaluator, tally = asyncio.run(_evaluate(gateway, store, samples=2))
    assert tally["asked"] == 12 and tally["errors"] == 1
    assert tally["correct:r1-fake"] == 6 and "correct:qwen-fake" not in tally

    records = store.load()
    assert len(records) == 12
    for record in records:
        assert set(record) >= RECORD_FIELDS or record["error"], record
    r1 = [r for r in records if r["model"] == "r1-fake"]
    assert all(r["correct"] for r in r1)
    # The reasoning arrived in `reasoning` or `reasoning_content` and never reached the answer.
    assert all("maybe \\boxed{48}" in r["reasoning"] and "48" not in r["answer"] for r in r1)
    assert {r["request"]["temperature"] for r in r1} == {0.6} and {r["request"]["top_p"] for r in r1} == {0.95}
    assert all(r["messages"][0]["role"] == "user" and r["prompt_family"] == "deepseek-r1" for r in r1)
    qwen = [r for r in records if r["model"] == "qwen-fake" and not r["error"]]
    # Qwen's <think> block is removed too: its "\boxed{50}" there does not count.
    assert not any(r["correct"] for r in qwen)
    assert {r["request"]["temperature"] for r in qwen} == {0.7}
    assert next(r for r in qwen if r["task"] == "percentage")["extracted"] == "48"

    failed_sample = next(r["sample"] for r in records if r["error"])
    answered_first = 3 - (failed_sample == 0)  # accuracy and pairing use sample 0 of each item
    run_info = {"models": ["r1-fake", "qwen-fake"], "suites": ["smoke"], "policies": {
        name: policy.to_json() for name, policy in evaluator.policies.items()}}  # fmt: skip
    summary = summarize(records, run_info)
    smoke = summary["suites"]["smoke"]
    assert (smoke["r1-fake"]["correct"], smoke["r1-fake"]["n"]) == (3, 3)
    assert smoke["qwen-fake"]["errors"] == 1 and smoke["qwen-fake"]["n"] == answered_first
    assert smoke["r1-fake"]["pass_at_k"]["2"]["value"] == 1.0
    paired = summary["paired"]["smoke"][0]
    expected = ("r1-fake", "qwen-fake", answered_first, 0)
    assert (paired["a"], paired["b"], paired["only_a"], paired["only_b"]) == expected
    assert paired["mcnemar_exact_p"] == pytest.approx(2 * 0.5**answered_first)
    paths = write_report(tmp_path, summary)
    assert "3/3 = 100.0% [43.9%, 100.0%]" in paths["markdown"].read_text()

    # Resume: only the request that failed is asked again.
    _, again = asyncio.run(_evaluate(gateway, store, samples=2))
    assert again["asked"] == 1 and again["skipped"] == 11 and again.get("errors", 0) == 0
    assert len(store.load()) == 12 and not any(r["error"] for r in store.load())


def test_records_survive_a_line_cut_off_by_an_interruption(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    store.append({"model": "m", "suite": "s", "item_id": "a", "sample": 0, "error": None})
    with store.path.open("a") as out:
        out.write('{"model": "m", "suite": "s", "item_id": "b", "sam')  # killed mid-write
    fresh = RecordStore(store.path)
    fresh.append({"model": "m", "suite": "s", "item_id": "c", "sample": 0, "error": None})
    assert {r["item_id"] for r in fresh.load()} == {"a", "c"}
    assert fresh.done_keys() == {("m", "s", "a", 0), ("m", "s", "c", 0)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cli_fails_clearly_without_a_gateway(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = subprocess.run(
        [*EVAL, "--gateway", url, "--out", str(tmp_path / "run"), "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert f"no gateway at {url}" in result.stderr and "make run" in result.stderr
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_cli_will_not_mix_a_new_run_into_an_old_one(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text("")
    result = subprocess.run([*EVAL, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "--resume" in result.stderr


def test_cli_refuses_code_without_namespace_isolation_unless_confirmed(tmp_path: Path) -> None:
    # No `unshare` on PATH: the sandbox cannot isolate model-written code here.
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "prlimit").symlink_to(shutil.which("prlimit") or "/usr/bin/prlimit")
    env = {**os.environ, "PATH": str(tools)}
    url = f"http://127.0.0.1:{_free_port()}"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [*EVAL, "--gateway", url, "--out", str(tmp_path / "run"), *extra]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)

    refused = run("--suites", "smoke")
    assert refused.returncode == 2
    assert "`unshare` is not installed" in refused.stderr
    assert "--confirm-run-unsafe-code" in refused.stderr and "UNSAFE_CODE=1" in refused.stderr
    assert "no gateway" not in refused.stderr  # refused before the gateway was asked anything
    confirmed = run("--suites", "smoke", "--confirm-run-unsafe-code")
    assert "WARNING: model-written code runs WITHOUT namespace isolation" in confirmed.stderr
    assert confirmed.returncode == 2 and f"no gateway at {url}" in confirmed.stderr  # got past the sandbox
    no_code = run("--suites", "math")  # nothing to sandbox, nothing to refuse
    assert no_code.returncode == 2 and f"no gateway at {url}" in no_code.stderr
    assert "unshare" not in no_code.stderr


@pytest.mark.engines
def test_eval_end_to_end_through_the_real_stack(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*EVAL, "--gateway", stack.gateway_url, "--limit", "4", "--max-tokens", "32", "--concurrency", "8"]
    argv += ["--out", str(out), "--no-progress"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "## Accuracy (95% Wilson interval)" in result.stdout

    models = stack.model_names()
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    per_model = {"code": 4, "math": 4, "logic": 4, "smoke": 3}
    assert len(records) == len(models) * sum(per_model.values())
    assert {(r["model"], r["suite"]) for r in records} == {(m, s) for m in models for s in per_model}
    for record in records:
        assert record["error"] is None, record["error"]
        assert set(record) >= RECORD_FIELDS
        assert isinstance(record["correct"], bool) and 0.0 <= record["score"] <= 1.0
        assert 0 < record["completion_tokens"] <= 32 and record["prompt_tokens"] > 0
        assert record["latency_s"] > 0 and record["finish_reason"] in {"stop", "length"}
    families = {r["model"]: r["prompt_family"] for r in records}
    assert families == {"r1-tiny": "deepseek-r1", "qwen-tiny": "chat-template-defaults"}
    assert {r["request"]["temperature"] for r in records if r["model"] == "r1-tiny"} == {0.6}
    assert all(r["messages"][0]["role"] == "user" for r in records)
    # Random weights: whatever R1 writes is reasoning (never closed), so it has no answer at all.
    assert all(r["answer"] == "" for r in records if r["model"] == "r1-tiny" and "</think>" not in (r["content"] or ""))
    code = [r for r in records if r["grader"] == "code" and r["answer"]]
    assert code and all(r["detail"] for r in code)  # the sandbox ran and said why

    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == models and list(summary["suites"]) == list(per_model)
    for suite, n in per_model.items():
        for model in models:
            stats = summary["suites"][suite][model]
            assert stats["n"] == n and 0 <= stats["ci95"][0] <= stats["ci95"][1] <= 1
            assert stats["mean_output_tokens"] > 0 and stats["mean_latency_s"] > 0
        (pair,) = summary["paired"][suite]
        assert (
            pair["n"] == n and 0 <= pair["mcnemar_exact_p"] <= 1 and pair["low"] <= pair["difference"] <= pair["high"]
        )
    assert summary["run"]["sandbox"]["isolation"] == "namespaces"
    report = (out / "report.md").read_text()
    assert "## Paired difference" in report and "McNemar" in report and all(m in report for m in models)
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    # Resumed, the same run asks nothing new and rebuilds the same report.
    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert f"asked 0, already done {len(records)}" in again.stdout
    assert len((out / "records.jsonl").read_text().splitlines()) == len(records)
