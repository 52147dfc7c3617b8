"""POST /feedback: validated, idempotent by event id, published to ``<prefix>.feedback``."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from redis.exceptions import RedisClusterException, RedisError

from schemas.events import EventId, FeedbackEvent, ItemId, UserId
from serving.bodies import IsoTimestamp, RequestBody, strict_json
from serving.deps import ContextDep
from serving.errors import FeedbackRejected
from serving.problems import BODY_ERRORS, problem

router = APIRouter(tags=["feedback"])
# A cluster client that cannot reach any node raises RedisClusterException, not a RedisError.
REDIS_DOWN = (RedisError, RedisClusterException, OSError)


class FeedbackIn(RequestBody):
    event_id: EventId = Field(description="Client-chosen unique id; re-sending it is a no-op.")
    user_id: UserId
    item_id: ItemId
    kind: Literal["click", "watch", "like", "dislike", "dismiss"]
    request_id: EventId | None = Field(None, description="The recommendation it responds to.")
    value: float | None = Field(None, ge=-1e9, le=1e9, allow_inf_nan=False)
    ts: IsoTimestamp | None = Field(
        None, description="Event time, ISO 8601 (default: when received; UTC without a zone)."
    )


class FeedbackOut(BaseModel):
    event_id: str
    status: Literal["accepted", "duplicate"]


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=202,
    summary="Record user feedback on a recommendation",
    responses={**BODY_ERRORS, 503: problem("The event queue is full; retry later.")},
    dependencies=[Depends(strict_json)],
)
async def post_feedback(body: FeedbackIn, ctx: ContextDep) -> FeedbackOut:
    event = FeedbackEvent(**body.model_dump(exclude={"ts"}), ts=body.ts or datetime.now(UTC))
    key = ctx.keys.feedback_dedup(event.event_id)
    remembered: str | None = key  # None: Redis was down, there is nothing to forget
    try:
        first = await ctx.redis.set(key, "1", nx=True, ex=ctx.settings.serve.feedback_dedup_ttl_s)
    except REDIS_DOWN:
        # Redis down: publish anyway; downstream consumers dedupe by event id as well.
        first, remembered = True, None
    if not first:
        ctx.metrics.feedback.labels("duplicate").inc()
        return FeedbackOut(event_id=event.event_id, status="duplicate")
    if not ctx.sink.send_feedback(event):
        if remembered is not None:  # not sent: forget the id so the client's retry goes through
            with contextlib.suppress(*REDIS_DOWN):
                await ctx.redis.delete(remembered)
        ctx.metrics.feedback.labels("rejected").inc()
        raise FeedbackRejected(event.event_id)
    ctx.metrics.feedback.labels("accepted").inc()
    return FeedbackOut(event_id=event.event_id, status="accepted")
