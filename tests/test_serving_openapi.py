"""The OpenAPI document is the API's contract, checked against the real ``streamrec serve`` on
the real stack: every answer (error answers too) is documented with its status and shape,
and schemathesis finds nothing over every operation, admin ones with and without the token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import Settings
from tests.support.serving import (
    LiveServer,
    live_server,
    publish,
    serving_settings,
    trained,
    write_history,
    write_trending,
)

pytestmark = pytest.mark.integration

TOKEN = "openapi-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


@pytest.fixture
def api(topics: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """Version 1 in production, version 2 published (so promote and canary can succeed),
    live features in Redis."""
    s = serving_settings(topics)
    model = trained(str(s.cache_path)).model
    publish(s, model)
    publish(s, model, promote=False)
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_trending(r, s, {"50": 3.0, "181": 2.0, "100": 1.0})
    write_history(r, s, "newbie", ["1", "50"])
    with live_server(s, tmp_path, STREAMREC_SERVE_ADMIN_TOKEN=TOKEN) as server:
        yield server


def _documented(doc: dict, path: str, method: str, status: int) -> dict:
    """The JSON schema documented for an answer, with the components to resolve its refs."""
    response = doc["paths"][path][method]["responses"][str(status)]
    return {**response["content"]["application/json"]["schema"], "components": doc["components"]}


def test_every_error_answer_is_documented_with_its_shape(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        doc = c.get("/openapi.json").json()
        feedback = {"event_id": "e1", "user_id": "1", "item_id": "50", "kind": "click"}
        answers = [
            ("/recommend/{user_id}", "get", c.get("/recommend/1?k=0")),
            ("/recommend/{user_id}", "get", c.get("/recommend/1?k=101")),
            ("/recommend/{user_id}", "get", c.get("/recommend/a,b")),
            ("/feedback", "post", c.post("/feedback", json={**feedback, "kind": "stare"})),
            ("/feedback", "post", c.post("/feedback", content=b"{", headers=AUTH)),
            ("/feedback", "post", c.post("/feedback", content=b"x" * 70_000)),
            ("/admin/promote", "post", c.post("/admin/promote", json={"version": 1})),
            ("/admin/promote", "post", c.post("/admin/promote", json={"version": 9}, headers=AUTH)),
            ("/admin/promote", "post", c.post("/admin/promote", json={"version": 1}, headers=AUTH)),
            ("/admin/rollback", "post", c.post("/admin/rollback", json={}, headers=AUTH)),
            ("/admin/canary", "put", c.put("/admin/canary", json={"version": 2}, headers=AUTH)),
            ("/admin/rollouts/current", "get", c.get("/admin/rollouts/current", headers=AUTH)),
        ]
    statuses = [resp.status_code for *_, resp in answers]
    assert statuses == [422, 422, 422, 422, 422, 413, 401, 404, 409, 409, 422, 404]
    for path, method, resp in answers:
        documented = doc["paths"][path][method]["responses"]
        assert str(resp.status_code) in documented, (path, resp.status_code)
        jsonschema.validate(resp.json(), _documented(doc, path, method, resp.status_code))
    # The 422s carry the documented field list, not FastAPI's default (loc/msg/type) shape.
    assert answers[1][2].json()["errors"] == [
        {"field": "k", "message": "must be at most 100, got 101"}
    ]
    assert "HTTPValidationError" not in json.dumps(doc)
    k = next(
        p for p in doc["paths"]["/recommend/{user_id}"]["get"]["parameters"] if p["name"] == "k"
    )
    assert k["schema"]["type"] == "integer"
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)  # serve_max_k
    for path, method in [("/feedback", "post"), ("/admin/rollouts", "post")]:
        assert {"400", "413", "422"} <= set(doc["paths"][path][method]["responses"])


def _bounded(n: int):
    return settings(
        max_examples=n,
        derandomize=True,  # the same examples on every run: no flaky CI
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def test_schemathesis_finds_nothing_on_any_operation(api: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    failures: list[str] = []
    runs: list[str] = []
    not_negatable: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        auths = [AUTH, None] if operation.path.startswith("/admin") else [AUTH]
        for auth in auths:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.label} [{mode.value}, {'token' if auth else 'no token'}]"
                strategy = operation.as_strategy(generation_mode=mode, headers=auth)

                @_bounded(40)
                @given(case=strategy)
                def check(case) -> None:
                    case.call_and_validate(base_url=api.url, checks=CHECKS, timeout=30)

                runs.append(label)
                try:
                    check()
                except Unsatisfiable:
                    # Nothing to make invalid: no parameters, no body (and the token fixed).
                    assert mode is GenerationMode.NEGATIVE, label
                    not_negatable.append(label)
                except (Exception, BaseExceptionGroup) as err:  # all operations are tried
                    failures.append(f"{label}: {str(err)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert len(runs) >= 2 * 14 + 2 * 9  # every operation (admin ones twice), both modes
    assert len(not_negatable) <= 6, not_negatable
    assert "Traceback" not in api.output()
