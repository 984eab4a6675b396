"""Send every (model, item, sample) through the gateway, concurrently, and record the verdicts.

    async with httpx.AsyncClient(base_url="http://127.0.0.1:8000", timeout=3600) as client:
        models = select_models(await fetch_models(client), ["r1", "qwen"])
        evaluator = Evaluator(client, models, Grader(Sandbox()), RecordStore(out / "records.jsonl"))
        await evaluator.run(items)              # skips what the store already has

Requests for each model are kept `concurrency` deep so vLLM can batch them; both models are
asked at the same time, item by item, so an interrupted run leaves comparable partial results.
Every finished request is appended to the store at once (resumable). A request that fails at
the HTTP level is retried a few times and then recorded with an `error`, which keeps it out
of the accuracy figures (they are about the model, not the transport) and makes a resumed run
ask again; the report counts such errors.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tqdm import tqdm

from evaluation.extract import split_reasoning
from evaluation.grading import Grader
from evaluation.items import Item
from evaluation.prompting import ModelInfo, PromptPolicy, policy_for
from evaluation.records import RecordStore

# 504 is not retried: the gateway sends it after its whole request timeout, and asking again
# would spend that long once more; the record keeps the error and a resumed run asks again.
RETRYABLE_STATUS = frozenset({429, 502, 503})
ATTEMPTS = 4
# Rough upper bound of prompt tokens per character (Qwen's BPE gives ~3-4 characters per token
# on English and code), used only to keep prompt + max_tokens inside the context window.
TOKENS_PER_CHAR = 0.4
TEMPLATE_TOKENS = 64


class GatewayUnavailable(RuntimeError):
    """The gateway cannot be reached, or answers but its engines are not ready."""


async def fetch_models(client: httpx.AsyncClient) -> list[ModelInfo]:
    """The gateway's models, after checking it is up and its engines are ready."""
    url = str(client.base_url).rstrip("/")
    hint = "Start the stack with `make run` (or point --gateway at a running one)."
    try:
        ready = await client.get("/ready", timeout=30)
        listed = await client.get("/v1/models", timeout=30)
    except httpx.TransportError as exc:
        raise GatewayUnavailable(f"no gateway at {url}: {type(exc).__name__}: {exc}. {hint}") from exc
    if listed.status_code != 200:
        raise GatewayUnavailable(f"{url}/v1/models answered HTTP {listed.status_code}: {listed.text[:300]}. {hint}")
    if ready.status_code != 200:
        raise GatewayUnavailable(f"the gateway at {url} is up but its engines are not ready: {ready.text[:500]}")
    return [ModelInfo.from_gateway(entry) for entry in listed.json()["data"]]


def select_models(available: list[ModelInfo], wanted: list[str] | None) -> list[ModelInfo]:
    """Models by served name or alias, in the order asked; all of them when `wanted` is empty."""
    if not wanted:
        return available
    chosen = []
    for name in wanted:
        match = next((m for m in available if name in m.names), None)
        if match is None:
            listed = ", ".join("/".join(m.names) for m in available)
            raise ValueError(f"the gateway serves no model called {name!r}; it serves: {listed}")
        if match not in chosen:
            chosen.append(match)
    return chosen


@dataclass(frozen=True)
class RunOptions:
    samples: int = 1  # per item and model (pass@k needs k or more)
    concurrency: int = 16  # requests in flight per model
    max_tokens: int | None = None  # None: whatever the context window leaves
    progress: bool = True


class Evaluator:
    def __init__(
        self,
        client: httpx.AsyncClient,
        models: list[ModelInfo],
        grader: Grader,
        store: RecordStore,
        options: RunOptions | None = None,
    ) -> None:
        self.client = client
        self.models = models
        self.grader = grader
        self.store = store
        self.options = options or RunOptions()
        self.policies: dict[str, PromptPolicy] = {m.name: policy_for(m) for m in models}
        self._slots = {m.name: asyncio.Semaphore(self.options.concurrency) for m in models}
        # Code runs in the sandbox on our own cores; a couple at a time is what 2 cores take.
        self._grading = asyncio.Semaphore(2)
        self.tally: Counter[str] = Counter()

    async def run(self, items: list[Item]) -> Counter[str]:
        """Ask what the store lacks; returns counts (asked, skipped, errors, correct:<model>)."""
        done = self.store.done_keys()
        jobs = [
            (model, item, sample) for sample in range(self.options.samples) for item in items for model in self.models
        ]
        pending = [(m, i, s) for m, i, s in jobs if (m.name, i.suite, i.item_id, s) not in done]
        self.tally["skipped"] = len(jobs) - len(pending)
        bar = tqdm(total=len(pending), desc="eval", unit="answer", disable=not self.options.progress)
        try:
            await asyncio.gather(*(self._job(model, item, sample, bar) for model, item, sample in pending))
        finally:
            bar.close()
        return self.tally

    async def _job(self, model: ModelInfo, item: Item, sample: int, bar: tqdm[Any]) -> None:
        async with self._slots[model.name]:
            record = await self._answer(model, item, sample)
        if not record.get("error"):
            async with self._grading:
                grade = await asyncio.to_thread(self.grader.grade, item, record["answer"])
            record.update(correct=grade.correct, score=grade.score, extracted=grade.extracted, detail=grade.detail)
        self.store.append(record)
        self.tally["asked"] += 1
        if record.get("error"):
            self.tally["errors"] += 1
        elif record["correct"]:
            self.tally[f"correct:{model.name}"] += 1
        bar.update(1)
        bar.set_postfix({k: v for k, v in self.tally.items() if k != "skipped"}, refresh=False)

    async def _answer(self, model: ModelInfo, item: Item, sample: int) -> dict[str, Any]:
        policy = self.policies[model.name]
        messages = policy.messages(item)
        body: dict[str, Any] = {"model": model.name, "messages": messages, **policy.sampling}
        max_tokens = self._max_tokens(model, messages)
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        record: dict[str, Any] = {
            "model": model.name,
            "suite": item.suite,
            "item_id": item.item_id,
            "sample": sample,
            "task": item.task,
            "kind": item.kind,
            "grader": item.grader,
            "reference": _reference_summary(item),
            "prompt_family": policy.family,
            "messages": messages,
            "request": {k: v for k, v in body.items() if k not in {"model", "messages"}},
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        data, error, latency = await self._post(body)
        if data is None:
            return record | {"error": error, "correct": False, "score": 0.0}
        choice = data["choices"][0]
        message = choice.get("message") or {}
        reasoning_field = message.get("reasoning") or message.get("reasoning_content")
        answer, reasoning = split_reasoning(message.get("content"), reasoning_field)
        usage = data.get("usage") or {}
        return record | {
            "error": None,
            "content": message.get("content"),
            "reasoning": reasoning,
            "answer": answer,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "latency_s": round(latency, 4),
        }

    def _max_tokens(self, model: ModelInfo, messages: list[dict[str, str]]) -> int | None:
        wanted = self.options.max_tokens
        if wanted is None or model.max_model_len is None:
            return wanted
        prompt_chars = sum(len(m["content"]) for m in messages)
        room = model.max_model_len - int(prompt_chars * TOKENS_PER_CHAR) - TEMPLATE_TOKENS
        return max(1, min(wanted, room))

    async def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, float]:
        error = "not sent"
        for attempt in range(ATTEMPTS):
            start = time.perf_counter()
            try:
                response = await self.client.post("/v1/chat/completions", json=body)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                latency = time.perf_counter() - start
                if response.status_code == 200:
                    return response.json(), None, latency
                error = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code == 400 and "context length" in response.text and "max_tokens" in body:
                    # Our estimate of the prompt was short: let the engine fill the remaining window.
                    body = {k: v for k, v in body.items() if k != "max_tokens"}
                    continue
                if response.status_code not in RETRYABLE_STATUS:
                    break
            await asyncio.sleep(2**attempt)
        return None, error, 0.0


def _reference_summary(item: Item) -> Any:
    """What the answer was compared with, small enough for every record."""
    if item.grader == "code":
        return {"entry_point": item.reference["entry_point"]}
    if item.grader == "reasoning_gym":
        return item.reference["entry"]["answer"]
    return item.reference
