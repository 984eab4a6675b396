"""HTTP face of the side-by-side comparison: the page at `/`, `/v1/compare` and its votes.

    app.include_router(compare_router(lambda: services.compare, lambda: services.votes, anonymous=True))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    POST /v1/compare           {"prompt": "Why is the sky blue?", "max_tokens": 256, "stream": true}
    POST /v1/compare/votes     {"prompt": ..., "left": {"model": "r1-tiny", "answer": ...}, "right": ..., "vote": "tie"}
    GET  /v1/compare/votes     tally per model pair: wins, ties, both bad, win rates with 95% intervals
    GET  /v1/compare/settings  what the page needs to start: default models, anonymous mode

The logic lives in `gateway.compare` (fan-out, SSE parsing, timings; its docstring has the
stream format) and `gateway.votes` (SQLite store, Wilson intervals); this module only
validates and renders.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.compare import Comparer, Event
from gateway.errors import InvalidRequest
from gateway.proxy import unless_disconnected
from gateway.votes import PairTally, Side, Vote, VoteStore

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
    seed: int
    models: dict[str, ModelResult]


class VoteSide(BaseModel):
    model: str
    answer: str = ""
    reasoning: str = ""
    timings: dict[str, Any] = Field(default_factory=dict)


class VoteRequest(BaseModel):
    prompt: str
    left: VoteSide
    right: VoteSide
    vote: Literal["left", "right", "tie", "both_bad"]
    params: dict[str, Any] = Field(default_factory=dict)
    anonymous: bool = False


class WinRate(BaseModel):
    rate: float
    low: float
    high: float


class PairResult(BaseModel):
    models: tuple[str, str]
    votes: int
    wins: dict[str, int]
    ties: int
    both_bad: int
    win_rate: dict[str, WinRate] = Field(description="wins / all votes of the pair, with a 95% Wilson interval")

    @classmethod
    def of(cls, tally: PairTally) -> PairResult:
        rates = {m: WinRate(rate=i.rate, low=i.low, high=i.high) for m, i in tally.win_rates().items()}
        return cls(
            models=tally.models,
            votes=tally.votes,
            wins=tally.wins,
            ties=tally.ties,
            both_bad=tally.both_bad,
            win_rate=rates,
        )


class TallyResponse(BaseModel):
    object: Literal["compare.tally"] = "compare.tally"
    total_votes: int
    pairs: list[PairResult]


class VoteResponse(BaseModel):
    id: int
    left: str = Field(description="the model that was on the left (revealed after an anonymous vote)")
    right: str
    vote: str
    tally: TallyResponse


class Settings(BaseModel):
    anonymous: bool
    models: list[str]


def compare_router(comparer: Callable[[], Comparer], votes: Callable[[], VoteStore], *, anonymous: bool) -> APIRouter:
    """Routes for the page and the API; `comparer` and `votes` return the app's live services."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/v1/compare/settings")
    async def settings() -> Settings:
        return Settings(anonymous=anonymous, models=comparer().default_models())

    @router.post("/v1/compare", response_model=CompareResponse)
    async def compare(body: CompareRequest, request: Request) -> Any:
        plan = comparer().plan(body.upstream_fields(), models=body.models)
        if body.stream:
            return StreamingResponse(
                _sse(comparer().stream(plan)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await unless_disconnected(request.receive, comparer().complete(plan))

    @router.post("/v1/compare/votes")
    def add_vote(body: VoteRequest) -> VoteResponse:  # sync: FastAPI runs it in a thread, off the event loop
        left, right = (comparer().router.resolve(side.model).name for side in (body.left, body.right))
        if left == right:
            raise InvalidRequest("A vote compares two different models.", param="right")
        vote = Vote(
            prompt=body.prompt,
            left=Side(left, body.left.answer, body.left.reasoning, body.left.timings),
            right=Side(right, body.right.answer, body.right.reasoning, body.right.timings),
            outcome=body.vote,
            params=body.params,
            anonymous=body.anonymous,
        )
        vote_id = votes().add(vote)
        return VoteResponse(id=vote_id, left=left, right=right, vote=body.vote, tally=_tally(votes()))

    @router.get("/v1/compare/votes")
    def tally() -> TallyResponse:
        return _tally(votes())

    return router


def _tally(store: VoteStore) -> TallyResponse:
    pairs = [PairResult.of(t) for t in store.tally()]
    return TallyResponse(total_votes=sum(p.votes for p in pairs), pairs=pairs)


async def _sse(events: AsyncGenerator[Event, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        # Starlette cancels this generator when the client disconnects; closing the inner one
        # is what cancels the upstream requests.
        await events.aclose()
