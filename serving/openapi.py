"""The OpenAPI document FastAPI generates, completed with what only the settings know
(``k``'s bounds) and with query parameters as they travel: a query string cannot carry a
JSON null, so an optional parameter is its plain type, absent when not given."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from core.config import ServeSettings

RECOMMEND = "/recommend/{user_id}"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    if "anyOf" not in schema or len(branches) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**branches[0], **rest}


def complete(schema: dict[str, Any], serve: ServeSettings) -> dict[str, Any]:
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            for param in operation.get("parameters", ()):
                if param.get("in") == "query":
                    param["schema"] = _without_null(param["schema"])
    for param in schema["paths"][RECOMMEND]["get"]["parameters"]:
        if param["name"] == "k":
            text = (
                f"How many items (default {serve.default_k}, at most "
                f"{serve.max_k}: STREAMREC_SERVE_MAX_K)."
            )
            param["description"] = text
            param["schema"].update(maximum=serve.max_k, default=serve.default_k, description=text)
    return schema


def install(app: FastAPI, serve: ServeSettings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate(), serve)
        return app.openapi_schema

    # FastAPI's documented way to customise the schema is replacing app.openapi.
    app.openapi = openapi  # type: ignore[method-assign]
