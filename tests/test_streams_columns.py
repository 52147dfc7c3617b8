"""The batch decoder (streams.fast_decode.fast_decode_many) against its per-event
reference, fast_decode. Pure: no services."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
import pytest

import streams.fast_decode as fd
from streams.decode import decode_batch

ODD = [
    ("user_id", "é"),
    ("user_id", "a b"),
    ("item_id", "a,b"),
    ("item_id", ""),
    ("event_id", "x" * 129),
    ("item_id", 5),
    ("ts", "2024-02-30T00:00:00Z"),
    ("ts", "2024-05-01 12:00:00"),
    ("ts", "0001-01-01T00:00:00+01:00"),
    ("ts", "2100-01-01T00:00:00Z"),
    ("ts", "2024-05-01T12:00:00+05:30"),
    ("ts", "2024-05-01T12:00:00"),
    ("ts", 1714564800),
    ("schema_version", 2),
    ("schema_version", True),
    ("event_type", "rate"),
    ("extra", 1),
    ("minute", -1),
    ("minute", 7.0),
    ("seconds", 86_400.5),
    ("seconds", 3),
    ("rating", 5.5),
    ("rating", 4),
    ("rating", None),
    ("rating", True),
]


def _docs(event_type: str, n: int, odd: float, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for j in range(n):
        ts = datetime.fromtimestamp(1.7e9 + j * rng.choice([0, 0.01, 1, 3600]), UTC)
        doc: dict = {
            "event_type": event_type,
            "event_id": f"e{j}",
            "user_id": f"u{rng.randrange(50)}",
            "item_id": f"m{rng.randrange(30)}",
            "ts": rng.choice([ts.isoformat(), ts.strftime("%Y-%m-%dT%H:%M:%SZ")]),
        }
        if event_type == "watch":
            doc["minute"] = rng.choice([None, 0, 7])
            doc["seconds"] = rng.choice([None, 1.5])
        else:
            doc["rating"] = rng.choice([1.0, 3.5, 5.0])
        if rng.random() < odd:
            key, value = rng.choice(ODD)
            doc[key] = value
        raw = orjson.dumps(doc)
        if rng.random() < odd / 4:  # a repeated key or an escaped character
            raw = (
                raw.replace(b"{", b'{"user_id":"x",', 1)
                if j % 2
                else raw.replace(b"u", b"\\u0075", 1)
            )
        out.append(raw)
    return out


@pytest.mark.parametrize("event_type", ["watch", "rate"])
@pytest.mark.parametrize("odd", [0.0, 0.002, 0.1, 1.0])
def test_the_batch_decoder_gives_fast_decode_results(event_type, odd):
    values = _docs(event_type, 600, odd, seed=int(odd * 1000))
    assert fd.fast_decode_many(values, event_type) == [
        fd.fast_decode(v, event_type) for v in values
    ]


def test_a_clean_batch_is_decoded_without_an_event_by_event_step(monkeypatch):
    values = _docs("rate", 500, 0.0, seed=1)
    calls = []
    monkeypatch.setattr(fd, "fast_decode", lambda v, t: calls.append(v))
    recs = [(j, orjson.loads(v)["user_id"].encode(), v, None) for j, v in enumerate(values)]
    out = decode_batch(recs, event_type="rate", topic="t", partition=0, now=0.0)
    assert len(out.events) == 500 and not out.dead and calls == []
