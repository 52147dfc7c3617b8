"""GET /recommend/{user_id}: JSON by default, the bare comma-separated list for
``Accept: text/plain`` or ``?format=text`` (the CMU course contract)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from schemas.events import MAX_ID_LENGTH
from serving.context import ServingContext
from serving.errors import InvalidRequest
from serving.pipeline import recommend
from serving.problems import ValidationProblem
from serving.recommendation import Recommendation

router = APIRouter(tags=["recommend"])

# Same rule as user ids on the wire (schemas.events): no whitespace, commas or control chars.
USER_ID_PATTERN = r"^[^\s,\x00-\x1f\x7f]+$"


class RecommendationOut(BaseModel):
    user_id: str
    items: list[str] = Field(description="Item ids, best first.")
    model_name: str
    model_version: int | None = Field(description="None when the answer is a fallback.")
    variant: Literal["production", "canary", "fallback"]
    fallback_reason: str | None = Field(
        description="Why the popularity fallback answered (unknown_user, redis_unavailable, "
        "timeout, model_unavailable, model_loading, registry_unavailable, no_model, ...)."
    )
    request_id: str


def _wants_text(fmt: str | None, accept: str | None) -> bool:
    if fmt is not None:
        return fmt == "text"
    if not accept:
        return False
    # Text only when the client prefers it over JSON; `*/*` (curl, browsers) gets JSON.
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "text/plain" in types and "application/json" not in types


@router.get(
    "/recommend/{user_id}",
    response_model=RecommendationOut,
    summary="Top-k recommendations for a user",
    responses={
        200: {
            "content": {"text/plain": {"example": "50,181,100,258,294"}},
            "description": "JSON, or the bare comma-separated list with `Accept: text/plain` "
            "or `?format=text`. Always 200 for a valid request: outages answer with "
            "popularity (`variant: fallback`).",
        },
        422: {"model": ValidationProblem, "description": "Invalid user id, k or format."},
    },
)
async def get_recommendations(
    request: Request,
    user_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=USER_ID_PATTERN,
            description="User id: no whitespace, commas or control characters.",
        ),
    ],
    k: Annotated[
        int | None, Query(ge=1, description="How many items (default 20, at most serve_max_k).")
    ] = None,
    format: Annotated[
        Literal["json", "text"] | None, Query(description="Force the response format.")
    ] = None,
) -> Response:
    # Read here rather than declared as dependencies/header parameters: each declared one
    # costs FastAPI a resolution step on every request of the hottest route.
    ctx: ServingContext = request.app.state.ctx
    accept = request.headers.get("accept")
    settings = ctx.settings
    if k is None:
        k = settings.serve.default_k
    elif k > settings.serve.max_k:
        raise InvalidRequest("k", f"must be at most {settings.serve.max_k}, got {k}")
    # One record, read by the metrics middleware for the latency labels (in request.state
    # first, so a failure still counts for the variant the user was assigned to) and logged.
    reco = Recommendation(user_id=user_id, k=k, model_name=ctx.models.name)
    if ctx.probe is not None:
        reco.marks = {"route": time.perf_counter()}
    request.state.recommendation = reco
    await recommend(ctx, user_id, k, reco=reco)
    if _wants_text(format, accept):
        return Response(",".join(reco.items), media_type="text/plain")
    # Serialised directly (the schema above documents it): this is the hot path.
    return Response(orjson.dumps(reco.body()), media_type="application/json")
