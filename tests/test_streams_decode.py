"""The decoding fast path (streams.fast_decode) against the pydantic event models: whatever
the fast path accepts, the model accepts with the same values; what it does not accept goes
to the model, so a dead letter's reason is unchanged. Pure: no services."""

from __future__ import annotations

import random

import annotated_types
import orjson
import pytest

from schemas.errors import EventValidationError
from schemas.events import RateEvent, WatchEvent
from streams.decode import decode_batch, decode_one
from streams.fast_decode import EventRecord, fast_decode

IDS = ["a", "u1", "x" * 128, "x" * 129, "y" * 256, "y" * 257, "a,b", "a b", "é", "a\t", ""]
IDS += ["a\x7f", "~!#", 5, None]
TS = [
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00+05:30",
    "2024-05-01T12:00:00-00:00",
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00.5",
    "2024-05-01T12:00:00.123456Z",
    "2024-05-01T12:00:00.1234567Z",
    "2024-02-30T00:00:00Z",
    "2024-05-01 12:00:00",
    "2024-05-01",
    "2024-W01-1T00:00:00Z",
    "2024-05-01T24:00:00Z",
    "2024-05-01T23:59:60Z",
    "2024-05-01T12:00:00+24:00",
    "2024-05-01T12:00:00+23:59",
    "0000-01-01T00:00:00Z",
    "1997-09-20T03:05:10Z",
    1714564800,
    "1714564800",
    None,
]
NUMBERS = [None, 0, 1, 5, 4.5, 5.5, -1, -0.0, 86_400, 86_400.5, 100_000, 100_001, 5.0, True]
NUMBERS += ["5", 1e300]
VERSIONS = [1, 2, 0, True, "1", 1.0]
TYPES = ["watch", "rate", "x", 1]
MISSING = object()


def event_docs(event_type: str, n: int, seed: int) -> list[dict]:
    """Mostly valid fields (so both paths are exercised), each one sometimes odd."""
    rng = random.Random(seed)

    def pick(usual: list, odd: list) -> object:
        return rng.choice(usual) if rng.random() < 0.85 else rng.choice(odd)

    out = []
    for _ in range(n):
        doc = {
            "event_id": pick(IDS[:3], IDS),
            "user_id": pick(IDS[:3], IDS),
            "item_id": pick(IDS[:3], IDS),
            "ts": pick(TS[:6], TS),
            "event_type": pick([event_type, MISSING], TYPES),
            "schema_version": pick([1, MISSING], VERSIONS),
        }
        if event_type == "watch":
            doc["minute"] = pick([MISSING, None, 0, 7, 100_000], NUMBERS)
            doc["seconds"] = pick([MISSING, None, 0, 1.5, 30], NUMBERS)
        else:
            doc["rating"] = pick([4, 3.5, 0, 5.0], [MISSING, *NUMBERS])
        if rng.random() < 0.03:
            doc["extra"] = 1
        out.append({k: v for k, v in doc.items() if v is not MISSING})
    return out


@pytest.mark.parametrize("event_type", ["watch", "rate"])
def test_the_fast_path_accepts_only_what_the_model_accepts_with_equal_values(event_type):
    model = {"watch": WatchEvent, "rate": RateEvent}[event_type]
    fast = 0
    for doc in event_docs(event_type, 4000, seed=len(event_type)):
        raw = orjson.dumps(doc)
        rec = fast_decode(raw, event_type)
        try:
            ref = decode_one(raw, event_type)
        except EventValidationError:
            assert rec is None, doc
            continue
        if rec is None:
            continue
        fast += 1
        assert isinstance(ref, model)
        for name in model.model_fields:
            assert getattr(rec, name) == getattr(ref, name), (name, doc)
            assert type(getattr(rec, name)) is type(getattr(ref, name)), (name, doc)
        assert rec.epoch == ref.ts.timestamp() == ref.epoch
    assert fast > 1000  # the generator reaches the fast path often


def test_the_fast_path_bounds_are_the_models():
    def bounds(model, name):
        meta = model.model_fields[name].metadata
        lo = next(m.ge for m in meta if isinstance(m, annotated_types.Ge))
        hi = next(m.le for m in meta if isinstance(m, annotated_types.Le))
        return lo, hi

    assert bounds(WatchEvent, "minute") == (0, 100_000)
    assert bounds(WatchEvent, "seconds") == (0, 86_400)
    assert bounds(RateEvent, "rating") == (0, 5)
    assert set(WatchEvent.model_fields) == set(EventRecord._fields) - {"epoch", "rating"}
    assert set(RateEvent.model_fields) == set(EventRecord._fields) - {"epoch", "minute", "seconds"}


def test_common_events_take_the_fast_path_and_bad_ones_keep_their_reason():
    good = (
        b'{"schema_version":1,"event_id":"f79c","user_id":"259","ts":"1997-09-20T03:05:10Z",'
        b'"event_type":"rate","item_id":"255","rating":4.0}'
    )
    bad = b'{"event_id":"e1","user_id":"u","item_id":"i","ts":"2024-05-01T12:00:00Z","rating":9}'
    out = decode_batch(
        [(0, b"u", good, None), (1, b"u", bad, None)],
        event_type="rate",
        topic="t.rate",
        partition=0,
        now=0.0,
    )
    assert [type(e) for e in out.events] == [EventRecord]
    assert out.events[0].rating == 4.0 and out.offsets == [0]
    assert [d.source_offset for d in out.dead] == [1]
    assert "rating" in out.dead[0].reason and "less than or equal to 5" in out.dead[0].reason
