"""The decoding fast path (streams.fast_decode) against the pydantic event models: whatever
the fast path accepts, the model accepts with the same values; what it does not accept goes
to the model, so a dead letter's reason is unchanged. Pure: no services."""

from __future__ import annotations

import random

import annotated_types
import orjson
import pytest

from schemas.codec import decode_event
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
    # Hostile: before year 1 / after 9999 once in UTC (OverflowError in astimezone), and
    # either side of the models' bounds [1970-01-01, 2100-01-01) UTC.
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:30:00+01:00",
    "2099-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
    "2100-01-01T00:30:00+01:00",
    True,
    1714564800.5,
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


def hostile_bytes(doc: dict, rng: random.Random) -> bytes:
    """``doc`` as JSON, sometimes with a key repeated (orjson and pydantic keep the last) or
    a character escaped, which the fast path must leave to the models."""
    raw = orjson.dumps(doc)
    roll = rng.random()
    if roll < 0.05 and doc:
        key = rng.choice(sorted(doc))
        dup = orjson.dumps({key: rng.choice([doc[key], "x", 1, None])})[1:-1]
        raw = raw[:1] + dup + b"," + raw[1:]
    elif roll < 0.08 and b'"u1"' in raw:
        raw = raw.replace(b'"u1"', b'"\\u0075\\u0031"', 1)
    return raw


@pytest.mark.parametrize("event_type", ["watch", "rate"])
def test_the_fast_path_accepts_only_what_the_model_accepts_with_equal_values(event_type):
    model = {"watch": WatchEvent, "rate": RateEvent}[event_type]
    fast = 0
    rng = random.Random(7)
    for doc in event_docs(event_type, 4000, seed=len(event_type)):
        raw = hostile_bytes(doc, rng)
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


def _reference(raw: bytes, event_type: str):
    try:
        return decode_event(raw, expected_type=event_type)
    except EventValidationError as err:
        return err


@pytest.mark.parametrize("event_type", ["watch", "rate"])
def test_the_batch_decoder_agrees_with_the_reference_decoder(event_type):
    """Every path of decode_batch (fast, model, reference) gives the reference's answer:
    the same event, or a dead letter with the same reason."""
    rng = random.Random(11)
    raws = [hostile_bytes(d, rng) for d in event_docs(event_type, 3000, seed=3)]
    out = decode_batch(
        [(i, b"k", raw, None) for i, raw in enumerate(raws)],
        event_type=event_type,
        topic="t",
        partition=0,
        now=0.0,
    )
    got = dict(zip(out.offsets, out.events, strict=True))
    dead = {d.source_offset: d.reason for d in out.dead}
    assert len(got) + len(dead) == len(raws)
    for i, raw in enumerate(raws):
        ref = _reference(raw, event_type)
        if isinstance(ref, EventValidationError):
            assert dead.get(i) == ref.reason, raw
        else:
            assert i in got, (raw, dead.get(i))
            for name in type(ref).model_fields:
                assert getattr(got[i], name) == getattr(ref, name), (name, raw)


OTHER_EVENTS = {
    "reco_request": {"request_id": "q", "k": 10},
    "reco_response": {
        "request_id": "q",
        "items": ["a", "b"],
        "model_name": "m",
        "model_version": "1",
        "variant": "production",
        "latency_ms": 1.5,
    },
    "feedback": {"item_id": "i", "kind": "click", "value": 1.0},
    "watch": {"item_id": "i"},
    "rate": {"item_id": "i", "rating": 4},
}


@pytest.mark.parametrize("event_type", sorted(OTHER_EVENTS))
@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1900-01-01T00:00:00Z"]
)
def test_an_out_of_range_timestamp_is_a_dead_letter_of_every_event_type(event_type, ts):
    raw = orjson.dumps(
        {"event_id": "x", "user_id": "u", "ts": ts, "event_type": event_type}
        | OTHER_EVENTS[event_type]
    )
    out = decode_batch([(5, b"u", raw, None)], event_type=event_type, topic="t", partition=0, now=0)
    assert out.events == [] and [d.source_offset for d in out.dead] == [5]
    assert "ts: " in out.dead[0].reason and "out of range" in out.dead[0].reason
    assert fast_decode(raw, "watch") is None


@pytest.mark.parametrize("event_type", sorted(OTHER_EVENTS))
def test_a_repeated_key_is_a_dead_letter_on_every_path(event_type):
    good = {"event_id": "x", "user_id": "u", "ts": "2024-01-01T00:00:00Z"} | OTHER_EVENTS[
        event_type
    ]
    raw = orjson.dumps(good)
    repeated = b'{"user_id":"someone-else",' + raw[1:]
    out = decode_batch(
        [(0, b"u", raw, None), (1, b"u", repeated, None)],
        event_type=event_type,
        topic="t",
        partition=0,
        now=0,
    )
    assert out.offsets == [0] and [d.source_offset for d in out.dead] == [1]
    assert out.dead[0].reason.endswith(
        "user_id: duplicate key: a JSON object must not repeat a key"
    )
    with pytest.raises(EventValidationError, match="duplicate key"):
        decode_one(repeated, event_type)


def test_the_fast_path_year_test_is_the_models_bounds():
    from schemas.events import MAX_TS, MIN_TS

    for bound in (MIN_TS, MAX_TS):  # fast_decode compares years: bounds must be year starts
        assert (bound.month, bound.day, bound.hour, bound.minute, bound.second) == (1, 1, 0, 0, 0)
        assert bound.microsecond == 0 and bound.utcoffset().total_seconds() == 0
