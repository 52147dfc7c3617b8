"""Hostile request bodies against the real ``streamrec serve`` on the real stack: bodies over
STREAMREC_SERVE_MAX_BODY_BYTES are refused with 413 before they are read (by Content-Length,
or counted while a chunked body streams in), so the process does not grow; every body that is
not valid is a 4xx in the documented error shape, never a 5xx; every valid one is accepted."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from tests.support.serving import LiveServer, live_server, publish, serving_settings, trained

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
MiB = 1024 * 1024


def _serve(topics: Settings, tmp_path: Path, **env: str):
    s = serving_settings(topics)
    publish(s, trained(str(s.cache_path)).model)
    return live_server(s, tmp_path, **env)


@pytest.fixture
def api(topics: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    with _serve(topics, tmp_path) as server:
        yield server


def _feedback(event_id: str, size: int | None = None) -> bytes:
    """A valid feedback body, padded with whitespace to ``size`` bytes."""
    raw = json.dumps({"event_id": event_id, "user_id": "1", "item_id": "50", "kind": "click"})
    return raw.encode().ljust(size or 0)


def _chunks(body: bytes, size: int = MiB) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_50_mb_body_is_refused_unread_declared_or_chunked(api: LiveServer) -> None:
    huge = b'{"event_id":"' + b"a" * (50 * MiB) + b'","user_id":"1","item_id":"2","kind":"click"}'
    with httpx.Client(base_url=api.url, timeout=120) as c:
        assert c.post("/feedback", content=_feedback("warm-up"), headers=JSON).status_code == 202
        peak_before = api.status("VmHWM")
        declared = c.post("/feedback", content=huge, headers=JSON)
        streamed = c.post("/feedback", content=_chunks(huge), headers=JSON)
        after = c.post("/feedback", content=_feedback("after"), headers=JSON)
        recommend = c.get("/recommend/1?k=3")
    growth = api.status("VmHWM") - peak_before
    assert declared.status_code == 413, declared.text
    assert streamed.status_code == 413, streamed.text
    # The second one really was chunked, with no length to judge by up front.
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.request.headers
    for refused in (declared, streamed):
        assert "STREAMREC_SERVE_MAX_BODY_BYTES" in refused.json()["detail"]
    # Reading either body would have cost 50 MB at least (150 MB before this limit).
    assert growth < 16 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
    assert after.status_code == 202 and recommend.status_code == 200


def test_the_limit_is_a_setting_and_exact(topics: Settings, tmp_path: Path) -> None:
    limit = 2048
    with (
        _serve(topics, tmp_path, STREAMREC_SERVE_MAX_BODY_BYTES=str(limit)) as api,
        httpx.Client(base_url=api.url, timeout=30) as c,
    ):
        at, over = _feedback("at-limit", limit), _feedback("over-limit", limit + 1)
        answers = {
            "at": c.post("/feedback", content=at, headers=JSON),
            "at chunked": c.post(
                "/feedback", content=_chunks(_feedback("at-chunked", limit), 100), headers=JSON
            ),
            "over": c.post("/feedback", content=over, headers=JSON),
            "over chunked": c.post("/feedback", content=_chunks(over, 100), headers=JSON),
            "admin over": c.post("/admin/promote", content=over, headers=JSON),
        }
    assert len(at) == limit and len(over) == limit + 1
    assert answers["at"].status_code == 202, answers["at"].text
    assert answers["at chunked"].status_code == 202, answers["at chunked"].text
    assert answers["over"].status_code == 413
    assert answers["over chunked"].status_code == 413
    assert answers["admin over"].status_code == 413  # refused before auth is even looked at
    assert str(limit) in answers["over"].json()["detail"]


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_out_of_range_timestamp_is_a_422_not_a_500(api: LiveServer, ts: str) -> None:
    body = {"event_id": "e-range", "user_id": "1", "item_id": "50", "kind": "click", "ts": ts}
    resp = httpx.post(f"{api.url}/feedback", json=body, timeout=30)
    assert resp.status_code == 422, resp.text
    out = resp.json()
    assert out["errors"][0]["field"].startswith("body")
    assert out["detail"].startswith(out["errors"][0]["field"] + ": ")


# --- generated hostile bodies -----------------------------------------------------------
ID_CHARS = string.ascii_letters + string.digits + "-_.:éß漢🎬"
IDS = st.text(ID_CHARS, min_size=1, max_size=40)
KINDS = ["click", "watch", "like", "dislike", "dismiss"]
ZONES = st.none() | st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# Well inside the event contract's range (schemas.events), whatever the zone.
TIMES = st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=ZONES)
VALID = st.fixed_dictionaries(
    {"event_id": IDS, "user_id": IDS, "item_id": IDS, "kind": st.sampled_from(KINDS)},
    optional={
        "request_id": st.none() | IDS,
        "value": st.none() | st.integers(-(10**9), 10**9) | st.floats(-1e9, 1e9),
        "ts": st.none() | TIMES.map(datetime.isoformat),
    },
)
STRINGS = ["event_id", "user_id", "item_id", "kind"]
HUGE = st.sampled_from([257, 5_000, 65_000, 70_000, 300_000]) | st.integers(257, 100_000)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)
NOT_A_STRING = (
    st.integers()
    | st.floats()
    | st.booleans()
    | st.lists(JUNK, max_size=2)
    | JUNK.map(lambda j: {"nested": [j, {"deeper": j}]})
)
NOT_A_NUMBER = st.sampled_from(["5", "1.5", True, False, [1], {"v": 1}])
NOT_A_TIME = (
    st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.sampled_from(
        ["1700000000", "yesterday", "2024-13-01T00:00:00", "", "0001-01-01T00:00:00+01:00"]
    )
    | st.just("9999-12-31T23:59:59-01:00")
)


def _raw(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _set(field: str, values: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return st.tuples(VALID, values).map(lambda t: _raw({**t[0], field: t[1]}))


HOSTILE = st.one_of(
    # wrong JSON types, nested junk
    st.sampled_from(STRINGS).flatmap(lambda f: _set(f, NOT_A_STRING | st.none())),
    _set("request_id", NOT_A_STRING),
    _set("value", NOT_A_NUMBER | st.sampled_from([1e10, -1e10])),
    _set("ts", NOT_A_TIME),
    _set("kind", st.text(max_size=10).filter(lambda k: k not in KINDS)),
    # huge strings: over the field's maximum (422), some over the body limit too (413)
    st.sampled_from(STRINGS[:3]).flatmap(lambda f: _set(f, HUGE.map(lambda n: "x" * n))),
    # ids with what ids may not contain
    st.sampled_from(STRINGS[:3]).flatmap(
        lambda f: _set(f, st.tuples(IDS, st.sampled_from(" ,\t\n\x00\x1f\x7f")).map("".join))
    ),
    # unknown or missing fields, other top-level values
    st.tuples(VALID, st.text(min_size=1, max_size=8)).map(
        lambda t: _raw({**t[0], "x-" + t[1]: True})
    ),
    st.tuples(VALID, st.sampled_from(STRINGS)).map(
        lambda t: _raw({k: v for k, v in t[0].items() if k != t[1]})
    ),
    JUNK.filter(lambda j: not isinstance(j, dict)).map(_raw),
    # raw bytes: a key twice, invalid UTF-8, NaN, truncated JSON
    st.tuples(VALID, st.sampled_from(STRINGS)).map(
        lambda t: b'{"' + t[1].encode() + b'": "dup", ' + _raw(t[0])[1:]
    ),
    st.tuples(VALID, st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"])).map(
        lambda t: _raw(t[0])[:2] + t[1] + _raw(t[0])[2:]
    ),
    st.tuples(VALID, st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])).map(
        lambda t: (
            _raw({k: v for k, v in t[0].items() if k != "value"})[:-1]
            + b', "value": '
            + t[1]
            + b"}"
        )
    ),
    st.tuples(VALID, st.integers(1, 30)).map(lambda t: _raw(t[0])[: -t[1]]),
    # nesting deeper than any JSON parser recurses
    st.integers(2_000, 40_000).map(lambda n: b'{"event_id": ' + b"[" * n + b"]" * n + b"}"),
)


def _bounded(n: int):
    return settings(
        max_examples=n,
        derandomize=True,  # the same examples on every run: no flaky CI
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def test_hostile_feedback_bodies_are_4xx_and_valid_ones_accepted(api: LiveServer) -> None:
    answers: dict[str, list[int]] = {"valid": [], "hostile": []}

    with httpx.Client(base_url=api.url, timeout=30, headers=JSON) as client:

        @_bounded(60)
        @given(body=VALID)
        def valid_is_accepted(body: dict) -> None:
            resp = client.post("/feedback", content=_raw(body))
            answers["valid"].append(resp.status_code)
            assert resp.status_code == 202, (body, resp.text)
            assert resp.json() == {"event_id": body["event_id"], "status": resp.json()["status"]}
            assert resp.json()["status"] in ("accepted", "duplicate")

        @_bounded(300)
        @given(raw=HOSTILE)
        def hostile_is_refused(raw: bytes) -> None:
            resp = client.post("/feedback", content=raw)
            answers["hostile"].append(resp.status_code)
            assert resp.status_code in (413, 422), (raw[:300], resp.status_code, resp.text)
            out = resp.json()
            assert isinstance(out["detail"], str) and out["detail"]
            if resp.status_code == 422:
                assert out["errors"] and all(set(e) == {"field", "message"} for e in out["errors"])

        valid_is_accepted()
        hostile_is_refused()
    # Both were really exercised, and the body limit was among the answers.
    assert len(answers["valid"]) >= 50 and len(answers["hostile"]) >= 250
    assert {413, 422} <= set(answers["hostile"])
    assert "Traceback" not in api.output()
