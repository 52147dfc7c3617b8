"""Code tests: the event contract (validation, wire format, JSON Schema files)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime

import jsonschema
import pytest

from schemas import EventValidationError, WatchEvent, decode_event, encode_event
from schemas.catalog import ItemRecord
from schemas.codec import decode_item
from schemas.events import EVENT_TYPES, RecoResponseEvent
from schemas.export import MODELS, file_for, incompatibilities, render, schema_of

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


def test_epoch_timestamps_accepted():
    event = decode_event({**GOOD, "ts": 881250949})
    assert event.ts == datetime.fromtimestamp(881250949, UTC)


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
    samples = {
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
    wire = json.loads(encode_event(decode_event(samples[name])))
    jsonschema.validate(wire, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**wire, "user_id": "has space"}, schema)


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
