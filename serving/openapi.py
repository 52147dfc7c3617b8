"""The OpenAPI document FastAPI generates, completed with what only the settings know
(``k``'s bounds) and with query parameters as they travel: a query string cannot carry a
JSON null, so an optional parameter is its plain type, absent when not given."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from core.config import Settings

RECOMMEND = "/recommend/{user_id}"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    if "anyOf" not in schema or len(branches) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**branches[0], **rest}


def complete(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            for param in operation.get("parameters", ()):
                if param.get("in") == "query":
                    param["schema"] = _without_null(param["schema"])
    for param in schema["paths"][RECOMMEND]["get"]["parameters"]:
        if param["name"] == "k":
            text = (
                f"How many items (default {settings.serve_default_k}, at most "
                f"{settings.serve_max_k}: STREAMREC_SERVE_MAX_K)."
            )
            param["description"] = text
            param["schema"].update(
                maximum=settings.serve_max_k, default=settings.serve_default_k, description=text
            )
    return schema


def install(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
