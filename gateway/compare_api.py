"""HTTP face of the side-by-side comparison: the page at `/`, `/v1/compare` and its votes.

    app.include_router(compare_router(lambda: s.compare, lambda: s.votes, anonymous=True, tallies=lambda: s.tallies))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    POST /v1/compare           {"prompt": "Why is the sky blue?", "max_tokens": 256, "stream": true}
    POST /v1/compare/votes     {"comparison_id": "cmp_...", "left": "r1-tiny", "right": "qwen-tiny", "vote": "tie"}
    GET  /v1/compare/votes     tally per model pair: wins, ties, both bad, win rates with 95% intervals,
                               and the length-controlled win rate (gateway/tally.py)
    GET  /v1/compare/settings  what the page needs to start: default models, anonymous mode

The logic lives in `gateway.compare` (fan-out, SSE parsing, timings; its docstring has the
stream format) and `gateway.votes` (the comparisons the server ran, votes on them, Wilson
intervals); this module only validates and renders. Bodies are parsed strictly (NaN, Infinity
and lone surrogates are a 400, as on the data plane).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.access_log import request_state
from gateway.compare import ComparePlan, Comparer, Event
from gateway.request_guard import require_json
from gateway.request_policy import parse_json
from gateway.streaming import DONE, EventStreamResponse, unless_disconnected
from gateway.tally import Tallies, TallyResponse
from gateway.votes import ComparisonRecord, Outcome, VoteStore

STATIC_DIR = Path(__file__).resolve().parent / "static"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant"]
    content: str


class CompareRequest(BaseModel):
    """A chat request for several models. Fields not named here (top_k, stop, min_tokens, ...)
    go to every engine unchanged, and the engines validate them, as for /v1/chat/completions."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] | None = None
    prompt: str | None = Field(default=None, description="shorthand for one user message")
    models: list[str] | None = Field(default=None, min_length=1, max_length=4, description="default: every model")
    stream: bool = False
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, description="drawn at random when left out; the same for every model")

    @model_validator(mode="after")
    def _check(self) -> CompareRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' and 'prompt'")
        extra = self.model_extra or {}
        if "model" in extra:
            raise ValueError("use 'models' (a list) to choose the models to compare")
        if extra.get("n", 1) != 1:
            raise ValueError("'n' must be 1 in a comparison")
        if "stream_options" in extra:
            raise ValueError("'stream_options' is set by the gateway")
        return self

    def upstream_fields(self) -> dict[str, Any]:
        fields = self.model_dump(exclude_none=True, exclude={"messages", "prompt", "models", "stream"})
        if self.messages is not None:
            fields["messages"] = [m.model_dump(exclude_none=True) for m in self.messages]
        else:
            fields["messages"] = [{"role": "user", "content": self.prompt}]
        return fields


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class Timings(BaseModel):
    ttft_s: float | None = Field(description="request sent -> first token, reasoning or answer")
    time_to_answer_s: float | None = Field(description="request sent -> first answer token")
    total_s: float | None
    output_tokens_per_s: float | None = Field(description="completion tokens / total_s")
    tpot_ms: float | None = Field(description="time per output token after the first")


class ModelResult(BaseModel):
    model: str
    requested: str
    content: str
    reasoning: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    timings: Timings
    params: dict[str, Any] = Field(description="the sampling parameters this model got")
    defaults_applied: dict[str, Any] = Field(description="those that came from the model's defaults")
    system_prompt: Literal["none", "keep", "merge_into_user"]
    status: int
    error: ErrorInfo | None


class CompareResponse(BaseModel):
    object: Literal["compare"] = "compare"
    id: str = Field(description="the comparison's id: a vote on it names this id")
    seed: int
    models: dict[str, ModelResult]


class VoteRequest(BaseModel):
    """A vote on a comparison the server ran: its id and the two models the judge saw."""

    model_config = ConfigDict(extra="forbid")

    comparison_id: str = Field(min_length=1, max_length=64, description="the `id` of a /v1/compare result")
    left: str = Field(min_length=1, max_length=256, description="the model shown on the left (name or alias)")
    right: str = Field(min_length=1, max_length=256, description="the model shown on the right")
    vote: Literal["left", "right", "tie", "both_bad"]
    anonymous: bool = Field(default=False, description="the judge did not see the model names")


class VoteResponse(BaseModel):
    comparison_id: str
    left: str = Field(description="the model that was on the left (revealed after an anonymous vote)")
    right: str
    vote: str
    tally: TallyResponse


class Settings(BaseModel):
    anonymous: bool
    models: list[str]


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed strictly before FastAPI validates it: NaN, Infinity and
    lone surrogates are a 400 (Starlette's `request.json()` would accept them and pass them on)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                require_json(request.scope)
                parse_json(await request.body())  # cached: FastAPI reads the same body next
            return await handler(request)

        return strict


def compare_router(
    comparer: Callable[[], Comparer],
    votes: Callable[[], VoteStore],
    *,
    anonymous: bool,
    tallies: Callable[[], Tallies],
) -> APIRouter:
    """Routes for the page and the API; `comparer`, `votes` and `tallies` return the app's live services."""
    router = APIRouter(route_class=StrictJsonRoute)

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/v1/compare/settings")
    async def settings() -> Settings:
        return Settings(anonymous=anonymous, models=comparer().default_models())

    @router.post("/v1/compare", response_model=CompareResponse)
    async def compare(body: CompareRequest, request: Request) -> Any:
        request_id = request_state(request.scope).get("request_id")
        plan = comparer().plan(body.upstream_fields(), models=body.models, request_id=request_id)
        if body.stream:
            return EventStreamResponse(CompareStream(comparer().stream(plan)))
        return await unless_disconnected(request.receive, comparer().complete(plan))

    @router.post("/v1/compare/votes")
    def add_vote(body: VoteRequest) -> VoteResponse:  # sync: FastAPI runs it in a thread, off the event loop
        left, right = (comparer().router.resolve(name).name for name in (body.left, body.right))
        receipt = votes().add_vote(
            body.comparison_id, left=left, right=right, outcome=body.vote, anonymous=body.anonymous
        )
        return VoteResponse(
            comparison_id=receipt.comparison_id, left=left, right=right, vote=body.vote, tally=_tally(tallies())
        )

    @router.get("/v1/compare/votes")
    def tally() -> TallyResponse:
        return _tally(tallies())

    return router


def record_of(plan: ComparePlan) -> ComparisonRecord:
    """What the server keeps of a comparison it ran, for the vote on it."""
    models = {}
    for run in plan.runs:
        answer = "".join(run.content)
        models[run.model] = Outcome(
            status=run.status,
            answer=answer,
            reasoning="".join(run.reasoning),
            answer_chars=len(answer),
            finish_reason=run.finish_reason,
            usage=run.usage,
            timings=run.timings(),
            error=run.error,
        )
    params = {k: v for k, v in (plan.runs[0].params if plan.runs else {}).items() if k != "seed"}
    return ComparisonRecord(
        id=plan.id, source="compare", models=models, prompt=plan.messages, params=params | {"seed": plan.seed}
    )


def _tally(tallies: Tallies) -> TallyResponse:
    return tallies.tally("compare", object_name="compare.tally")


class CompareStream:
    """A comparison's events as SSE, for EventStreamResponse; closing it cancels the engine requests."""

    def __init__(self, events: AsyncGenerator[Event, None]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            yield b"data: " + json.dumps(event, ensure_ascii=False, allow_nan=False).encode() + b"\n\n"
        yield DONE

    async def close(self, status: int) -> None:
        await self._events.aclose()  # runs Comparer.stream's cleanup: the engine requests are cancelled
