"""HTTP face of public traffic names: settings, live pairs, their review and their tally.

    app.include_router(traffic_router(lambda: s.traffic, lambda: s.traffic_store, lambda: s.tallies))

    GET    /v1/traffic                      every public name: models, settings, counters, stored pairs
    PUT    /v1/traffic/{name}               {"mirror_fraction": 0.5, "split": {"qwen": 90, "r1": 10}}
    DELETE /v1/traffic/{name}/settings      back to the config file's values
    GET    /v1/traffic/pairs                ?name=&limit=50&cursor=  newest first; &format=jsonl: every pair
    GET    /v1/traffic/pairs/{id}           one pair
    DELETE /v1/traffic/pairs/{id}           delete one; DELETE /v1/traffic/pairs?name=&before= many
    GET    /v1/traffic/review?name=         a random unvoted pair (prompts stored), sides shuffled
    POST   /v1/traffic/votes                {"pair_id": "pair_...", "left": "qwen", "right": "r1", "vote": "left"}
    GET    /v1/traffic/tally                votes on live pairs per model pair (gateway/tally.py)

Every route needs the API key (when keys are configured), as every other. Bodies are parsed
strictly (`StrictJsonRoute`); unknown fields are a 400. A vote on a live pair is the same
one-per-pair vote as on a comparison (`VoteStore.add_vote`: a second one is a 409), counted in
the live tally, separate from the side-by-side one.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.compare_api import StrictJsonRoute
from gateway.errors import InvalidRequest, NotFound
from gateway.tally import Tallies, TallyResponse
from gateway.traffic import TrafficDirector
from gateway.traffic_store import PairRow, TrafficStore, parse_cursor

EXPORT_BATCH = 500


class TrafficUpdate(BaseModel):
    """What moves at runtime. A field left out stays as it is; `"split": null` sends everything to the primary."""

    model_config = ConfigDict(extra="forbid")

    mirror_fraction: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    split: dict[str, float] | None = Field(default=None, description="weights per model (names or aliases)")

    @model_validator(mode="after")
    def _something(self) -> TrafficUpdate:
        if not self.model_fields_set:
            raise ValueError("give 'mirror_fraction' and/or 'split'")
        if "mirror_fraction" in self.model_fields_set and self.mirror_fraction is None:
            raise ValueError("'mirror_fraction' is a number from 0 to 1")
        return self


class LiveVote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pair_id: str = Field(min_length=1, max_length=64)
    left: str = Field(min_length=1, max_length=256, description="the model shown on the left")
    right: str = Field(min_length=1, max_length=256)
    vote: Literal["left", "right", "tie", "both_bad"]


class LiveVoteResponse(BaseModel):
    pair_id: str
    left: str
    right: str
    vote: str
    tally: TallyResponse


def traffic_router(
    director: Callable[[], TrafficDirector], store: Callable[[], TrafficStore], tallies: Callable[[], Tallies]
) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, prefix="/v1/traffic", tags=["traffic"])

    @router.get("")
    async def list_traffic() -> dict[str, Any]:
        data = []
        for traffic in director().routes.values():
            counts = await asyncio.to_thread(store().counts, traffic.name)
            data.append(traffic.describe() | {"stored_pairs": counts})
        return {"object": "list", "data": data}

    # Fixed paths first: a public name could otherwise shadow them.
    @router.get("/pairs")
    async def list_pairs(
        name: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=128)] = None,
        format: Literal["json", "jsonl"] = "json",
    ) -> Any:
        if cursor is not None:
            _check_cursor(cursor)
        if format == "jsonl":
            return StreamingResponse(
                _export(store(), name, cursor),
                media_type="application/x-ndjson",
                headers={"Content-Disposition": f'attachment; filename="{_file_stem(name)}-pairs.jsonl"'},
            )
        page = await asyncio.to_thread(store().pairs, name, limit=limit, cursor=cursor)
        return {"object": "list", "data": [row.to_dict() for row in page.rows], "next_cursor": page.next_cursor}

    @router.get("/pairs/{pair_id}")
    async def get_pair(pair_id: str) -> dict[str, Any]:
        return _found(await asyncio.to_thread(store().pair, pair_id), pair_id).to_dict()

    @router.delete("/pairs/{pair_id}")
    async def delete_pair(pair_id: str) -> dict[str, Any]:
        if not await asyncio.to_thread(store().delete_pair, pair_id):
            raise NotFound(f"No live pair '{pair_id}'.", param="pair_id")
        return {"id": pair_id, "deleted": True}

    @router.delete("/pairs")
    async def delete_pairs(
        name: Annotated[str, Query(max_length=256)],
        before: Annotated[float | None, Query(allow_inf_nan=False, description="unix time")] = None,
    ) -> dict[str, Any]:
        deleted = await asyncio.to_thread(store().delete_pairs, name, before=before)
        return {"name": name, "deleted": deleted}

    @router.get("/review")
    async def review(
        name: Annotated[str, Query(max_length=256)],
        exclude: Annotated[list[str] | None, Query(max_length=50, description="pair ids to skip")] = None,
    ) -> dict[str, Any]:
        director().find(name)
        row = await asyncio.to_thread(store().pick_for_review, name, exclude=tuple(exclude or ()))
        counts = await asyncio.to_thread(store().counts, name)
        return {"object": "traffic.review", "name": name, "pair": _blind(row) if row else None, "counts": counts}

    @router.post("/votes")
    def vote(body: LiveVote) -> LiveVoteResponse:  # sync: FastAPI runs it in a thread, off the event loop
        left, right = (director().router.resolve(name).name for name in (body.left, body.right))
        _found(store().pair(body.pair_id), body.pair_id)
        store().votes.add_vote(body.pair_id, left=left, right=right, outcome=body.vote, anonymous=True)
        tally = tallies().tally("live", object_name="traffic.tally")
        return LiveVoteResponse(pair_id=body.pair_id, left=left, right=right, vote=body.vote, tally=tally)

    @router.get("/tally")
    def tally() -> TallyResponse:
        return tallies().tally("live", object_name="traffic.tally")

    @router.put("/{name}")
    async def update(name: str, body: TrafficUpdate) -> dict[str, Any]:
        changes = body.model_dump(include=body.model_fields_set)
        settings = director().prepare(name, changes)
        assert settings.updated_at is not None
        # Stored first: if the database is away nothing changes here either (the replicas stay alike).
        await asyncio.to_thread(store().save_settings, name, settings.to_json(), updated_at=settings.updated_at)
        director().apply(name, settings)
        return director().find(name).describe()

    @router.delete("/{name}/settings")
    async def reset(name: str) -> dict[str, Any]:
        director().find(name)
        await asyncio.to_thread(store().delete_settings, name)
        director().reset(name)
        return director().find(name).describe()

    return router


def _check_cursor(cursor: str) -> None:
    try:
        parse_cursor(cursor)
    except ValueError:
        raise InvalidRequest("'cursor' is not one this gateway gave out (use 'next_cursor').", param="cursor") from None


def _found(row: PairRow | None, pair_id: str) -> PairRow:
    if row is None:
        raise NotFound(f"No live pair '{pair_id}' (deleted, expired, or never made).", param="pair_id")
    return row


def _blind(row: PairRow) -> dict[str, Any]:
    """A pair as a judge sees it: the prompt and two answers, in random order; the model names
    are in the body (the vote names them) and the page hides them until the vote."""
    record = row.record
    sides = list(record.models.items())
    random.shuffle(sides)

    def side(model: str, outcome: Any) -> dict[str, Any]:
        return {
            "model": model,
            "answer": outcome.answer,
            "reasoning": outcome.reasoning,
            "finish_reason": outcome.finish_reason,
            "usage": outcome.usage,
            "timings": outcome.timings,
        }

    return {
        "id": record.id,
        "created_at": record.created_at,
        "prompt": record.prompt,
        "left": side(*sides[0]),
        "right": side(*sides[1]),
    }


async def _export(store: TrafficStore, name: str | None, cursor: str | None) -> AsyncIterator[bytes]:
    """Every pair (newest first) as one JSON object per line, read from the database in batches."""
    while True:
        page = await asyncio.to_thread(store.pairs, name, limit=EXPORT_BATCH, cursor=cursor)
        if page.rows:
            yield "".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in page.rows).encode()
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _file_stem(name: str | None) -> str:
    """The export's file name from the query's `name`: only characters safe in a quoted header
    value (a control character or a quote there made the server drop the connection unanswered).

    >>> _file_stem(None), _file_stem("assistant"), _file_stem('a"b\x1f/c')
    ('live', 'assistant', 'a_b__c')
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] if name else "live"
