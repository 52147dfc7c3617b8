"""GET /recommend/{user_id}: JSON by default, the bare comma-separated list for
``Accept: text/plain`` or ``?format=text`` (the CMU course contract)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from schemas.errors import StreamrecError
from schemas.events import MAX_ID_LENGTH
from serving.context import ServingContext
from serving.errors import InvalidRequest
from serving.pipeline import recommend
from serving.problems import ValidationProblem, streamrec_problem, unexpected_problem
from serving.recommendation import Recommendation

router = APIRouter(tags=["recommend"])

# Same rule as user ids on the wire (schemas.events): no whitespace, commas or control chars.
ROUTE_PATH = "/recommend/{user_id}"
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
    ROUTE_PATH,
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
    if k is not None and k > ctx.settings.serve.max_k:
        raise InvalidRequest("k", f"must be at most {ctx.settings.serve.max_k}, got {k}")
    state = request.scope.setdefault("state", {})
    body, media_type = await answer(ctx, state, user_id, k, format, request.headers.get("accept"))
    return Response(body, media_type=media_type)


async def answer(
    ctx: ServingContext,
    state: dict,
    user_id: str,
    k: int | None,
    fmt: str | None,
    accept: str | None,
) -> tuple[bytes, str]:
    """The body and media type of the answer to a valid request (``k`` at most
    ``serve.max_k``), for the route above and for :class:`RecommendFastPath`."""
    if k is None:
        k = ctx.settings.serve.default_k
    # One record, read by the metrics middleware for the latency labels (in the request's
    # state first, so a failure still counts for the variant the user was assigned to) and
    # logged.
    reco = Recommendation(user_id=user_id, k=k, model_name=ctx.models.name)
    if ctx.probe is not None:
        reco.marks = {"route": time.perf_counter()}
    state["recommendation"] = reco
    await recommend(ctx, user_id, k, reco=reco)
    if _wants_text(fmt, accept):
        return ",".join(reco.items).encode(), "text/plain"
    # Serialised directly (the schema above documents it): this is the hot path.
    return orjson.dumps(reco.body()), "application/json"


# Ids the fast path takes as they are: printable ASCII but "," and "/" (the route's pattern
# admits these and more; anything else is left to FastAPI's validation).
_PLAIN_ID = re.compile(r"[!-+\-.0-~]+")
_PREFIX = "/recommend/"
# The content-type headers Starlette's Response gives these media types (a charset on text).
_CONTENT_TYPES = {
    "application/json": (b"content-type", b"application/json"),
    "text/plain": (b"content-type", b"text/plain; charset=utf-8"),
}


class RecommendFastPath:
    """``GET /recommend/{user_id}`` with a plainly valid id and query (``k`` as plain digits
    within bounds, ``format`` json or text, nothing else) and no body, answered without
    FastAPI's routing and parameter validation and before the app's middleware stack, which
    together cost more CPU than the rest of the event loop's work for the request (issue
    14's profiles); the same answer, headers, metrics and logs. The app
    (:class:`serving.app.StreamrecAPI`) hands it these requests and counts them as its
    metrics middleware counts the route's; any other request goes through the app."""

    def __init__(self, route: object, max_id_length: int = MAX_ID_LENGTH) -> None:
        self.route = route  # in scope["route"]: the metrics' endpoint label, as routing sets
        self.max_id_length = max_id_length

    def takes(self, scope: Scope, max_k: int) -> tuple[str, int | None, str | None] | None:
        """(user id, k, format) when this path answers the request, else None."""
        plain = _plain(scope, self.max_id_length)
        if plain is None or (plain[1] is not None and plain[1] > max_k):
            return None  # FastAPI's validation answers (422)
        for name, value in scope["headers"]:
            # A body: the app's body limit decides (413 past it); a GET's body is unused.
            if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                return None
        return plain

    async def serve(
        self,
        ctx: ServingContext,
        scope: Scope,
        receive: Receive,
        send: Send,
        plain: tuple[str, int | None, str | None],
    ) -> int:
        """Answers a request :meth:`takes`; returns the status sent."""
        user_id, k, fmt = plain
        accept = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"accept"), None)
        scope["route"] = self.route
        try:
            body, media_type = await answer(
                ctx, scope.setdefault("state", {}), user_id, k, fmt, accept
            )
        except StreamrecError as err:  # as the app's handlers answer these
            response = streamrec_problem(err)
        except Exception as err:
            response = unexpected_problem(err, "GET", scope["path"])
        else:
            # The two messages Starlette's Response sends, without building one per request.
            headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPES[media_type]]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return 200
        await response(scope, receive, send)
        return response.status_code


def _plain(scope: Scope, max_id_length: int) -> tuple[str, int | None, str | None] | None:
    """(user id, k, format) of a plainly valid GET /recommend/{user_id}, else None."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(_PREFIX) or scope.get("root_path"):
        return None
    user_id = path[len(_PREFIX) :]
    if len(user_id) > max_id_length or not _PLAIN_ID.fullmatch(user_id):
        return None
    k: int | None = None
    fmt: str | None = None
    query: bytes = scope["query_string"]
    if query:
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"k" and k is None and value.isdigit() and value[:1] != b"0":
                if len(value) > 9:
                    return None
                k = int(value)
            elif name == b"format" and fmt is None and value in (b"json", b"text"):
                fmt = value.decode()
            else:
                return None
    return user_id, k, fmt
