"""Every error answer of the API has one of two shapes, documented in the OpenAPI by the
models below: ``{"detail": ...}`` (:class:`Problem`) and, for 422, ``{"detail": ...,
"errors": [{"field", "message"}]}`` (:class:`ValidationProblem`). The exception handlers
here are the only place that turns errors into HTTP answers; routes raise domain errors."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from core.errors import StorageError
from schemas.errors import ConfigError, StreamrecError
from serving.errors import InvalidRequest, ServingError

log = logging.getLogger(__name__)


class Problem(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


class FieldProblem(BaseModel):
    field: str = Field(description="Where: `k`, `user_id`, `body.ts`, `body`, ...")
    message: str


class ValidationProblem(Problem):
    errors: list[FieldProblem] = Field(description="One entry per invalid field.")


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


INVALID = {"model": ValidationProblem, "description": "Invalid parameters or body."}
# What any route with a JSON body may answer besides its own statuses.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem("The body could not be read."),
    413: problem("The body is larger than STREAMREC_SERVE_MAX_BODY_BYTES; it was not read."),
    422: {"model": ValidationProblem, "description": "Invalid JSON or fields."},
}

_FRIENDLY = {
    "string_pattern_mismatch": "contains characters that are not allowed "
    "(whitespace, commas or control characters)",
    "json_invalid": "is not valid JSON",
    "missing": "is required",
}
# Causes of FastAPI's bare "error parsing the body" 400 that are bad JSON all the same.
_UNPARSABLE = {UnicodeDecodeError: "not UTF-8", RecursionError: "nested too deeply"}


def json_problem(status: int, detail: str, **extra: object) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        orjson.dumps({"detail": detail, **extra}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def invalid(errors: list[dict[str, str]]) -> Response:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return json_problem(422, detail, errors=errors)


def _validation_errors(err: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ()) if x not in ("path", "query", "header")]
        field = ".".join(loc) or "request"
        message = _FRIENDLY.get(e.get("type", ""), e.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ")  # pydantic's prefix for ValueErrors
        if e.get("type") == "json_invalid" and e.get("ctx", {}).get("error"):
            message = f"is not valid JSON ({e['ctx']['error']})"
        out.append({"field": field, "message": message})
    return out or [{"field": "request", "message": "is invalid"}]


def status_of(err: StreamrecError) -> int:
    if isinstance(err, ServingError):
        return err.status_code
    if type(err).__name__ == "VersionNotFound":
        return 404
    if isinstance(err, ConfigError):
        return 400
    if isinstance(err, StorageError):
        return 503  # the registry's store is down: not the client's fault, retryable
    return 409  # the registry refused a state change (e.g. nothing to roll back to)


def streamrec_problem(err: StreamrecError) -> Response:
    """The answer to one of our errors (the app's handler, and /recommend's fast path)."""
    if isinstance(err, InvalidRequest):
        return invalid([{"field": err.field, "message": err.reason}])
    return json_problem(status_of(err), str(err))


def unexpected_problem(err: Exception, method: str, path: str) -> Response:
    """The answer to a bug, not the client's doing (the app's handler, and /recommend's
    fast path): logged with the traceback, answered without it. Call it in ``except``."""
    log.exception("unexpected error on %s %s", method, path)
    return json_problem(500, f"internal error ({type(err).__name__})")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, err: RequestValidationError) -> Response:
        return invalid(_validation_errors(err))

    @app.exception_handler(HTTPException)
    async def on_http(_request: Request, err: HTTPException) -> Response:
        # FastAPI answers a body its JSON parser fails on with anything but a syntax error
        # with a bare 400; not UTF-8 (RFC 8259) or nested past the parser's recursion
        # limit, it is bad JSON, a 422 like any other.
        reason = _UNPARSABLE.get(type(err.__cause__))
        if reason is not None:
            return invalid([{"field": "body", "message": f"is not valid JSON ({reason})"}])
        response = json_problem(err.status_code, str(err.detail))
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(StreamrecError)
    async def on_streamrec(_request: Request, err: StreamrecError) -> Response:
        return streamrec_problem(err)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, err: Exception) -> Response:
        return unexpected_problem(err, request.method, request.url.path)
