"""Pure logic of the serving package (no services): canary slices, the fallback's merging,
content negotiation, admin token checks, error mapping, the request-log encoding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr

from core.config import Settings
from core.errors import StorageUnavailable
from models.errors import AliasError, VersionNotFound
from schemas.codec import decode_event, encode_event
from schemas.events import RecoRequestEvent, RecoResponseEvent
from schemas.manifest import AliasDocument, CanaryAlias, ProductionAlias
from serving import deps
from serving.errors import AdminDisabled, InvalidRequest, Unauthorized
from serving.fallback import model_popularity, popular_items, take
from serving.features import _add_days
from serving.logging_sink import request_payloads
from serving.problems import status_of as _status_of
from serving.recommendation import Recommendation
from serving.routes.recommend import RecommendFastPath, _plain, _wants_text
from serving.routing import CANARY, PRODUCTION, canary_bucket, choose_version

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _aliases(weight: float | None) -> AliasDocument:
    canary = (
        CanaryAlias(version=2, weight=weight, rollout_id="r1", since=NOW)
        if weight is not None
        else None
    )
    return AliasDocument(
        name="reco", production=ProductionAlias(version=1, since=NOW), canary=canary
    )


def test_canary_buckets_are_stable_uniform_and_per_rollout() -> None:
    users = [f"u{n}" for n in range(20_000)]
    buckets = [canary_bucket(u, "r1") for u in users]
    assert buckets == [canary_bucket(u, "r1") for u in users]
    assert all(0 <= b < 100 for b in buckets)
    share = sum(b < 10 for b in buckets) / len(users)
    assert 0.09 < share < 0.11
    # A new rollout draws a new slice (not the same 10% of users again).
    again = {u for u in users if canary_bucket(u, "r2") < 10}
    first = {u for u, b in zip(users, buckets, strict=True) if b < 10}
    assert len(first & again) < 0.2 * len(first)


def test_choose_version() -> None:
    assert choose_version(None, "u") is None
    assert choose_version(AliasDocument(name="reco"), "u") is None
    assert choose_version(_aliases(None), "u") == (PRODUCTION, 1)
    assert choose_version(_aliases(0.0), "u") == (PRODUCTION, 1)
    assert choose_version(_aliases(100.0), "u") == (CANARY, 2)
    growing = [
        {u for u in map(str, range(500)) if choose_version(_aliases(w), u)[0] == CANARY}
        for w in (5.0, 20.0, 50.0)
    ]
    # Raising the weight only adds users: nobody flips back to production.
    assert growing[0] <= growing[1] <= growing[2]


def test_take_merges_sources_skipping_seen_and_duplicates() -> None:
    live = [("a", 9.0), ("b", 8.0)]
    snapshot = [("b", 7.0), ("c", 6.0), ("d", 5.0)]
    assert take(3, {"a"}, live, snapshot) == ["b", "c", "d"]
    assert take(10, set(), live, ["c", "e"]) == ["a", "b", "c", "e"]
    assert take(0, set(), live) == []


class _Popular:
    """The smallest object honouring the recommend() part of the model contract."""

    def recommend(self, user_id, k, *, exclude=(), **_):
        return [(i, 1.0) for i in ("p1", "p2", "p3", "p4") if i not in exclude][:k]


class _Broken:
    def recommend(self, *_a, **_k):
        raise RuntimeError("boom")


def test_popular_items_prefers_live_then_snapshot_then_the_model() -> None:
    assert popular_items(2, set(), live=[("a", 1)], snapshot=[("b", 1)]) == ["a", "b"]
    assert popular_items(3, {"p1"}, live=[], snapshot=[("b", 1)], model=_Popular()) == [
        "b",
        "p2",
        "p3",
    ]
    assert popular_items(2, set(), model=_Broken()) == []  # the last resort never raises
    assert model_popularity(None, 3, set()) == []


@pytest.mark.parametrize(
    ("fmt", "accept", "text"),
    [
        (None, None, False),
        (None, "*/*", False),
        (None, "text/plain", True),
        (None, "text/plain; charset=utf-8", True),
        (None, "application/json, text/plain", False),
        ("text", "application/json", True),
        ("json", "text/plain", False),
    ],
)
def test_content_negotiation(fmt: str | None, accept: str | None, text: bool) -> None:
    assert _wants_text(fmt, accept) is text


def _creds(token: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def test_admin_token_checks() -> None:
    def require_admin(settings, credentials):
        return asyncio.run(deps.require_admin(settings, credentials))

    off = Settings()
    with pytest.raises(AdminDisabled):
        require_admin(off, _creds("anything"))
    empty = off.with_sections(serve={"admin_token": SecretStr("")})
    with pytest.raises(AdminDisabled):  # an empty secret must not open the door
        require_admin(empty, _creds(""))
    on = off.with_sections(serve={"admin_token": SecretStr("tok")})
    with pytest.raises(Unauthorized):
        require_admin(on, None)
    with pytest.raises(Unauthorized):
        require_admin(on, _creds("tok2"))
    with pytest.raises(Unauthorized):
        require_admin(on, _creds("tö"))  # non-ASCII compares without crashing
    assert require_admin(on, _creds("tok")) == "api-admin"


def test_errors_map_to_client_statuses() -> None:
    assert _status_of(InvalidRequest("k", "too big")) == 422
    assert _status_of(AdminDisabled()) == 403
    assert _status_of(Unauthorized("no")) == 401
    assert _status_of(VersionNotFound(name="reco", version=3, url="file:///x")) == 404
    assert _status_of(AliasError("nothing to roll back", name="reco", url="file:///x")) == 409
    assert _status_of(StorageUnavailable("down", url="file:///x")) == 503


def test_day_sums_add_up_the_newest_days_of_every_partitions_slot() -> None:
    sums: dict[int, dict[str, float]] = {2: {}, 7: {}}
    _add_days(sums, [["a", "2", "b", "1"], ["a", "1"], ["c", "5"]])  # newest day first
    _add_days(sums, [["a", "4"], [], ["c", "1"]])  # another partition's slot
    assert sums == {2: {"a": 7.0, "b": 1.0}, 7: {"a": 7.0, "b": 1.0, "c": 6.0}}


@pytest.mark.parametrize("reason", [None, "unknown_user"])
@pytest.mark.parametrize("ts", [NOW, datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)])
def test_request_log_payloads_are_byte_identical_to_the_event_encoding(
    reason: str | None, ts: datetime
) -> None:
    reco = Recommendation(
        user_id="u-é",
        k=2,
        model_name="reco",
        request_id="r1",
        items=["50", "181"],
        model_version=None if reason else 3,
        variant="fallback" if reason else "production",
        fallback_reason=reason,
        latency_ms=1.25,
    )
    fields = {
        "request_id": "r1",
        "user_id": "u-é",
        "items": ["50", "181"],
        "model_name": "reco",
        "model_version": "none" if reason else "3",
        "variant": "fallback" if reason else "production",
        "fallback_reason": reason,
        "latency_ms": 1.25,
        "status": 200,
    }
    request, response = request_payloads(reco, status=200, ts=ts)
    assert request == encode_event(
        RecoRequestEvent(event_id="r1.q", request_id="r1", user_id="u-é", k=2, ts=ts)
    )
    assert response == encode_event(RecoResponseEvent(event_id="r1.r", ts=ts, **fields))
    assert decode_event(response).fallback_reason == reason


def test_only_plainly_valid_recommend_requests_take_the_fast_path() -> None:
    """Anything but printable-ASCII ids and plain k / format goes to FastAPI's validation."""

    def plain(path: str, query: bytes = b"", method: str = "GET"):
        scope = {"method": method, "path": path, "query_string": query}
        return _plain(scope, 64)

    assert plain("/recommend/196") == ("196", None, None)
    assert plain("/recommend/u-1.x_", b"k=15&format=text") == ("u-1.x_", 15, "text")
    assert plain("/recommend/7", b"format=json&k=3") == ("7", 3, "json")
    for path, query in [
        ("/recommend/", b""),
        ("/recommend/a,b", b""),
        ("/recommend/a b", b""),
        ("/recommend/a/b", b""),
        ("/recommend/é", b""),
        ("/recommend/" + "x" * 65, b""),
        ("/recommend/1", b"k=0"),
        ("/recommend/1", b"k=05"),
        ("/recommend/1", b"k=-1"),
        ("/recommend/1", b"k=1&k=2"),
        ("/recommend/1", b"format=xml"),
        ("/recommend/1", b"k=1&other=2"),
        ("/recommend/1", b"k=1&"),
        ("/recommend/1", b"k=9999999999"),
        ("/feedback", b""),
    ]:
        assert plain(path, query) is None, (path, query)
    assert plain("/recommend/1", method="POST") is None


def test_the_fast_path_leaves_requests_with_a_body_or_a_large_k_to_the_app() -> None:
    """Before the middleware stack: a body is the body limit's to judge (413), a k past
    serve_max_k FastAPI's (422)."""
    fast = RecommendFastPath(route=None, max_id_length=64)

    def takes(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None):
        scope = {"method": "GET", "path": "/recommend/7", "query_string": query}
        return fast.takes({**scope, "headers": headers or []}, max_k=100)

    assert takes(b"k=100", [(b"accept", b"text/plain")]) == ("7", 100, None)
    assert takes(headers=[(b"content-length", b"0")]) == ("7", None, None)
    assert takes(b"k=101") is None
    assert takes(headers=[(b"content-length", b"5")]) is None
    assert takes(headers=[(b"transfer-encoding", b"chunked")]) is None
