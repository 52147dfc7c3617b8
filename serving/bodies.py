"""Request bodies are strict on the wire: JSON as RFC 8259 has it (UTF-8, no NaN or
Infinity, no key twice -- ``json.loads`` would silently keep the last one), every field of
its declared JSON type (no ``"5"`` or ``true`` for a number, no number for a timestamp),
and whatever a validator raises is a 422, never a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from schemas.events import Timestamp


class RequestBody(BaseModel):
    """Base of the API's body models: unknown fields are refused, values are not coerced
    from other JSON types, and an exception other than a validation error
    (``astimezone``'s OverflowError, say) becomes one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="wrap")
    @classmethod
    def _contain(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError:
            raise
        except Exception as err:
            raise ValueError(f"cannot be validated ({type(err).__name__}: {err})") from None


def _iso_datetime(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    if parsed.tzinfo is not None:
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None
    return parsed


# A Timestamp (UTC) given as an ISO 8601 string: pydantic alone would also take numbers and
# numeric strings as epoch seconds.
IsoTimestamp = Annotated[Timestamp, BeforeValidator(_iso_datetime)]


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"has the key {key[:64]!r} more than once")
        out[key] = value
    return out


def _constant(name: str) -> None:
    raise _Refused(f"is not valid JSON ({name} is not a JSON number)")


async def strict_json(request: Request) -> None:
    """Route dependency: refuses what ``json.loads`` lets through. Runs after FastAPI has
    read the body (cached on the request) and before the body is validated."""
    raw = await request.body()
    try:
        json.loads(raw.decode("utf-8"), object_pairs_hook=_object, parse_constant=_constant)
    except UnicodeDecodeError:
        message = "is not valid JSON (not UTF-8)"
    except _Refused as refused:
        message = refused.message
    except (ValueError, RecursionError):
        return  # not JSON at all: FastAPI's own parse or the model reports it
    else:
        return
    raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": message}])
