"""Code tests: the event contract (validation, wire format, JSON Schema files)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import EventValidationError, WatchEvent, decode_event, encode_event
from schemas.catalog import ItemRecord
from schemas.codec import decode_item
from schemas.events import EVENT_TYPES, RecoResponseEvent
from schemas.export import MODELS, file_for, incompatibilities, render, schema_of
from streams.decode import decode_one

GOOD = {
    "event_type": "watch",
    "event_id": "e1",
    "user_id": "42",
    "item_id": "the+godfather+1972",
    "minute": 3,
    "ts": "2024-02-07T05:30:53",
}


def test_round_trip_is_lossless():
    event = decode_event(json.dumps(GOOD))
    assert isinstance(event, WatchEvent)
    assert event.ts == datetime(2024, 2, 7, 5, 30, 53, tzinfo=UTC)  # naive -> UTC
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    ("patch", "field", "why"),
    [
        ({"user_id": ""}, "user_id", "at least 1"),
        ({"user_id": "a\nb"}, "user_id", "pattern"),
        ({"item_id": "a,b"}, "item_id", "pattern"),  # commas would break the CMU reply format
        ({"user_id": "u" * 300}, "user_id", "at most 256"),
        ({"minute": -1}, "minute", "greater than or equal"),
        ({"ts": "yesterday"}, "ts", "datetime"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"event_id": None}, "event_id", "string"),
    ],
)
def test_invalid_fields_are_named_with_the_reason(patch, field, why):
    with pytest.raises(EventValidationError) as info:
        decode_event({**GOOD, **patch})
    err = info.value
    assert err.event_type == "watch"
    assert any(f == field and why in r for f, r in err.errors), err.errors
    assert field in str(err)


def test_missing_field_and_wrong_type_reported():
    data = {k: v for k, v in GOOD.items() if k != "item_id"}
    with pytest.raises(EventValidationError, match="item_id: Field required"):
        decode_event(data)
    with pytest.raises(EventValidationError, match="rating: Input should be less than"):
        decode_event(
            {
                "event_type": "rate",
                "event_id": "r",
                "user_id": "1",
                "item_id": "2",
                "rating": 7,
                "ts": 0,
            }
        )


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"event_type": "click"}', "event_type: must be one of"),
        (b"x" * 70_000, "byte limit"),
        (json.dumps({**GOOD, "schema_version": 9}).encode(), "newer than this reader"),
    ],
)
def test_garbage_is_rejected_with_a_reason(raw, why):
    with pytest.raises(EventValidationError, match=why):
        decode_event(raw)


def test_expected_type_is_enforced_and_filled_in():
    with pytest.raises(EventValidationError, match="expected 'rate', got 'watch'"):
        decode_event(GOOD, expected_type="rate")
    untyped = {k: v for k, v in GOOD.items() if k != "event_type"}
    assert decode_event(untyped, expected_type="watch").event_type == "watch"


RATE = {k: v for k, v in GOOD.items() if k != "minute"} | {"event_type": "rate", "rating": 4}
RESPONSE = {
    "event_type": "reco_response",
    "event_id": "q",
    "request_id": "q",
    "user_id": "1",
    "items": ["1"],
    "model_name": "reco",
    "model_version": "1",
    "variant": "production",
    "latency_ms": 1,
    "ts": "2024-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    ("doc", "field", "why"),
    [
        ({**GOOD, "ts": 881250949}, "ts", "valid datetime string"),  # unix time: not ISO 8601
        ({**GOOD, "ts": "881250949"}, "ts", "valid datetime string"),
        ({**GOOD, "ts": 881250949.5}, "ts", "valid datetime string"),
        ({**GOOD, "ts": True}, "ts", "valid datetime string"),
        ({**GOOD, "minute": 3.0}, "minute", "valid integer"),
        ({**GOOD, "minute": "3"}, "minute", "valid integer"),
        ({**GOOD, "minute": True}, "minute", "valid integer"),
        ({**GOOD, "seconds": "30"}, "seconds", "valid number"),
        ({**GOOD, "schema_version": True}, "schema_version", "valid integer"),
        ({**RATE, "rating": True}, "rating", "valid number"),
        ({**RATE, "rating": "5"}, "rating", "valid number"),
        ({**RESPONSE, "status": "200"}, "status", "valid integer"),
    ],
)
def test_types_on_the_wire_are_strict(doc, field, why):
    for raw in (doc, json.dumps(doc, allow_nan=True).encode()):
        with pytest.raises(EventValidationError) as info:
            decode_event(raw)
        assert any(f == field and why in r for f, r in info.value.errors), info.value.errors


def test_numbers_are_finite():
    with pytest.raises(EventValidationError, match="latency_ms: Input should be a finite number"):
        decode_event({**RESPONSE, "latency_ms": float("inf")})
    # JSON has no infinity, but pydantic's parser reads 1e400 as one; orjson refuses it.
    raw = json.dumps(RESPONSE).replace('"latency_ms": 1', '"latency_ms": 1e400').encode()
    with pytest.raises(EventValidationError, match="not valid JSON"):
        decode_one(raw, "reco_response")


def test_python_callers_still_pass_datetimes_and_iso_strings():
    at = datetime(2024, 2, 7, 5, 30, 53, tzinfo=UTC)
    assert WatchEvent(event_id="e", user_id="u", item_id="i", ts=at).ts == at
    assert WatchEvent(event_id="e", user_id="u", item_id="i", ts="2024-02-07T05:30:53Z").ts == at
    assert decode_event({**RATE, "rating": 5}).rating == 5.0  # an integer is a number


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@pytest.mark.parametrize(
    "ts",
    [
        "0001-01-01T00:00:00+01:00",  # astimezone raised OverflowError (issue #18)
        "9999-12-31T23:59:59-01:00",
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2100-01-01T00:30:00+01:00",  # 2099-12-31T23:30 in UTC
    ],
)
def test_timestamps_out_of_range_are_validation_errors(name, ts):
    doc = {**WIRE_SAMPLES[name], "ts": ts}
    if ts.startswith("2100-01-01T00:30"):
        assert decode_event(doc).ts == datetime(2099, 12, 31, 23, 30, tzinfo=UTC)
        return
    with pytest.raises(EventValidationError, match=r"ts: .* out of range"):
        decode_event(json.dumps(doc))
    with pytest.raises(ValidationError, match="out of range"):  # the model itself, as the API
        EVENT_TYPES[name].model_validate(doc)


def test_a_repeated_key_is_rejected_naming_it():
    raw = b'{"rating": 1, ' + json.dumps(RATE).encode()[1:]
    with pytest.raises(EventValidationError, match="rating: duplicate key"):
        decode_event(raw)
    escaped = json.dumps(RATE).replace('"42"', '"\\u0034\\u0032"')  # an escape, no repeat
    assert decode_event(escaped).user_id == "42"
    nested = b'{"items": [{"a": 1, "a": 2}], ' + json.dumps(RESPONSE).encode()[1:]
    with pytest.raises(EventValidationError, match="duplicate key"):
        decode_event(nested)


def test_reco_response_and_catalog():
    r = RecoResponseEvent(
        event_id="x",
        request_id="x",
        user_id="1",
        items=["a", "b"],
        model_name="reco",
        model_version="3",
        variant="canary",
        latency_ms=4.2,
        ts=datetime.now(UTC),
    )
    assert decode_event(encode_event(r)) == r
    item = decode_item(
        b'{"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation"]}'
    )
    assert item == ItemRecord(item_id="1", title="Toy Story", year=1995, genres=["Animation"])
    with pytest.raises(EventValidationError, match="year"):
        decode_item({"item_id": "1", "title": "x", "year": 3000})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checked_in_json_schema_matches_the_model(name):
    model = MODELS[name]
    path = file_for(name, model.SCHEMA_VERSION)
    assert path.exists(), f"run `python -m schemas.export` to create {path.name}"
    assert path.read_text() == render(schema_of(model)), (
        f"{path.name} is stale: run `python -m schemas.export` (and bump SCHEMA_VERSION "
        "if the change is not backward compatible)"
    )


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_wire_bytes_validate_against_the_json_schema(name):
    schema = json.loads(file_for(name, 1).read_text())
    wire = json.loads(encode_event(decode_event(WIRE_SAMPLES[name])))
    jsonschema.validate(wire, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**wire, "user_id": "has space"}, schema)


WIRE_SAMPLES = {
    "watch": GOOD,
    "rate": {
        "event_type": "rate",
        "event_id": "r",
        "user_id": "1",
        "item_id": "2",
        "rating": 4,
        "ts": "2024-01-01T00:00:00Z",
    },
    "reco_request": {
        "event_type": "reco_request",
        "event_id": "q",
        "request_id": "q",
        "user_id": "1",
        "k": 20,
        "ts": "2024-01-01T00:00:00Z",
    },
    "reco_response": {
        "event_type": "reco_response",
        "event_id": "q",
        "request_id": "q",
        "user_id": "1",
        "items": ["1"],
        "model_name": "reco",
        "model_version": "1",
        "variant": "production",
        "latency_ms": 1,
        "ts": "2024-01-01T00:00:00Z",
    },
    "feedback": {
        "event_type": "feedback",
        "event_id": "f",
        "user_id": "1",
        "item_id": "2",
        "kind": "click",
        "ts": "2024-01-01T00:00:00Z",
    },
}


def test_every_version_is_backward_compatible_with_the_previous():
    for name, model in MODELS.items():
        versions = sorted(
            int(p.name.split(".v")[1].split(".")[0])
            for p in file_for(name, 1).parent.glob(f"{name}.v*.json")
        )
        assert versions[-1] == model.SCHEMA_VERSION
        for old, new in itertools.pairwise(versions):
            old_s = json.loads(file_for(name, old).read_text())
            new_s = json.loads(file_for(name, new).read_text())
            assert incompatibilities(old_s, new_s) == [], f"{name} v{old} -> v{new}"


def test_compatibility_checker_catches_breaking_changes():
    old = schema_of(WatchEvent)
    assert incompatibilities(old, old) == []
    added_optional = copy.deepcopy(old)
    added_optional["properties"]["device"] = {"type": "string"}
    assert incompatibilities(old, added_optional) == []
    required = copy.deepcopy(added_optional)
    required["required"].append("device")
    assert incompatibilities(old, required) == ["device: newly required"]
    retyped = copy.deepcopy(old)
    retyped["properties"]["user_id"]["type"] = "integer"
    assert any("user_id: type" in p for p in incompatibilities(old, retyped))
    removed = copy.deepcopy(old)
    del removed["properties"]["event_id"]
    assert "event_id: removed" in incompatibilities(old, removed)
    tighter = copy.deepcopy(old)
    tighter["properties"]["user_id"]["maxLength"] = 10
    assert "user_id: maxLength tightened" in incompatibilities(old, tighter)
