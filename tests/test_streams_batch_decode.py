"""The batch decoder (streams.batch_decode) against the per-event fast path it stands for:
whatever batch it accepts, ``fast_decode`` accepts every event of it with the same records;
what it refuses goes event by event (tests/test_streams_decode.py and
tests/test_decode_properties.py compare those paths with the models). Pure: no services."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import encode_event
from schemas.events import RateEvent, WatchEvent
from streams.batch_decode import decode_many
from streams.fast_decode import fast_decode
from streams.features import compute_deltas

SETTINGS = settings(
    max_examples=150,
    deadline=None,  # a shared 2-core machine: no per-example time limit
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

IDS = ["u1", "x" * 128, "x" * 129, "y" * 257, "a,b", "a b", "é", "a\x7f", "", "minute", "ts", 5]
TS = [
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00.123456+00:00",
    "2024-05-01T12:00:00.5Z",
    "2024-05-01T12:00:00+05:30",
    "2024-05-01T12:00:00-00:00",
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00.1234567Z",
    "2024-05-01t12:00:00Z",
    "2024-05-01 12:00:00Z",
    "2024-02-30T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "2099-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
    "2024-05-01T24:00:00Z",
    1714564800,
    None,
]
NUMBERS = [None, 0, 1, 5, 4.5, 5.5, -1, -0.0, 86_400, 86_401, 100_000, 100_001, 5.0, True, "5"]


def _field(usual: list, odd: list) -> st.SearchStrategy:
    # Mostly usual values, so that whole batches are often valid: one odd field in ~25 draws.
    return st.sampled_from(usual * (12 * len(odd) // len(usual) + 1) + odd)


def _doc(event_type: str) -> st.SearchStrategy[dict]:
    absent = object()
    fields = {
        "event_id": _field(["e1", "e2"], IDS),
        "user_id": _field(["u1", "42"], IDS),
        "item_id": _field(["m1", "the+matrix"], IDS),
        "ts": _field(TS[:3], TS),
        "event_type": _field([event_type, absent], ["rate", "watch", 1]),
        "schema_version": _field([1, absent], [2, 0, True, 1.0]),
    }
    if event_type == "watch":
        fields["minute"] = _field([absent, None, 7], NUMBERS)
        fields["seconds"] = _field([absent, None, 1.5], NUMBERS)
    else:
        fields["rating"] = _field([4, 3.5], [absent, *NUMBERS])
    return st.fixed_dictionaries(fields).map(
        lambda d: {k: v for k, v in d.items() if v is not absent}
    )


def _wire(doc: dict, how: str) -> bytes:
    raw = orjson.dumps(doc)
    if how == "repeat" and doc:
        key = sorted(doc)[len(raw) % len(doc)]
        return raw[:1] + orjson.dumps({key: doc[key]})[1:-1] + b"," + raw[1:]
    if how == "spaces":
        return raw.replace(b'":', b'" : ').replace(b",", b" , ")
    if how == "escape":
        return raw.replace(b"u1", b"\\u0075\\u0031", 1)
    if how == "extra":
        return raw[:-1] + b',"extra":1}'
    if how == "two":
        return raw + b"," + raw
    return raw


@SETTINGS
@given(
    event_type=st.sampled_from(["watch", "rate"]),
    data=st.data(),
)
def test_a_batch_is_accepted_only_as_the_fast_path_accepts_each_event(event_type, data):
    docs = data.draw(st.lists(_doc(event_type), min_size=1, max_size=6))
    hows = st.sampled_from(["plain"] * 40 + ["repeat", "spaces", "escape", "extra", "two"])
    _agree([_wire(d, data.draw(hows)) for d in docs], event_type)


def _agree(values: list[bytes], event_type: str) -> bool:
    """decode_many's answer is fast_decode's for each event; True if it accepted."""
    got = decode_many(values, event_type)
    each = [fast_decode(v, event_type) for v in values]
    if got is None:
        return False
    assert None not in each, values
    assert got == each, values
    for a, b in zip(got, each, strict=True):
        assert [type(x) for x in a] == [type(x) for x in b or ()]
    return True


ODD = {
    "event_id": IDS,
    "user_id": IDS,
    "item_id": IDS,
    "ts": TS,
    "event_type": ["rate", "watch", 1, None],
    "schema_version": [2, 0, True, 1.0, None, "1"],
    "minute": NUMBERS,
    "seconds": NUMBERS,
    "rating": NUMBERS,
}


def test_one_odd_field_in_a_valid_batch_is_decided_as_the_fast_path_decides_it():
    for event_type in ("watch", "rate"):
        good = orjson.loads(_valid(event_type, 1))
        for key, odd in ODD.items():
            if (key in ("minute", "seconds")) != (event_type == "watch") and key != "rating":
                continue
            if key == "rating" and event_type != "rate":
                continue
            for value in odd:
                for how in ("plain", "repeat", "spaces", "escape", "extra", "two"):
                    values = [_valid(event_type, 0), _wire(good | {key: value}, how)]
                    _agree([*values, _valid(event_type, 2)], event_type)
                    _agree(values[1:], event_type)


def _valid(event_type: str, i: int) -> bytes:
    model = WatchEvent if event_type == "watch" else RateEvent
    fields = {"rating": 4.0} if event_type == "rate" else {"minute": i}
    ev = model(
        event_id=f"e{i}", user_id=f"u{i}", item_id="m1", ts=f"2024-05-01T12:00:0{i}Z", **fields
    )
    return encode_event(ev)


def test_the_common_shapes_are_accepted_and_a_repeated_key_anywhere_is_not():
    for event_type in ("watch", "rate"):
        values = [_valid(event_type, i) for i in range(5)]
        # as bench/streams.py's sessions and the MovieLens replay write them
        values.append(
            b'{"event_type":"watch","event_id":"e9","user_id":"u9","item_id":"m2",'
            b'"ts":"2026-11-29T11:45:21.971072+00:00","minute":0}'
            if event_type == "watch"
            else b'{"schema_version":1,"event_id":"e6864a","user_id":"298",'
            b'"ts":"1998-01-07T14:20:06Z","event_type":"rate","item_id":"474","rating":4.0}'
        )
        for batch in (values, values * 100):  # small batches and big ones (Arrow's epochs)
            got = decode_many(batch, event_type)
            assert got == [fast_decode(v, event_type) for v in batch]
        # Big batches of one timestamp shape (handed to Arrow as one buffer), then with one
        # timestamp of the same width but no such day, or of another shape or width.
        old = b'"ts":"2024-05-01T12:00:00Z"'
        one = [values[0].replace(old, b'"ts":"2024-05-%02dT12:%02d:00Z"' % (1 + j % 28, j % 60))
               for j in range(600)]  # fmt: skip
        assert decode_many(one, event_type) == [fast_decode(v, event_type) for v in one]
        for ts in (b"2024-02-30T12:00:00Z", b"2024-05-01T12:00:00.5Z", b"2024-05-01 12:00:00Z"):
            bad = [*one[:300], values[0].replace(old, b'"ts":"' + ts + b'"'), *one[300:]]
            got = decode_many(bad, event_type)
            assert got is None or got == [fast_decode(v, event_type) for v in bad]
            assert (got is None) == (fast_decode(bad[300], event_type) is None)
        for j in range(len(values)):
            bad = list(values)
            bad[j] = b'{"user_id":"someone",' + bad[j][1:]
            assert decode_many(bad, event_type) is None
            assert fast_decode(bad[j], event_type) is None


def test_deltas_keep_times_to_the_millisecond_as_when_each_event_was_rounded():
    # Times with microseconds, some within a millisecond of an hour's end (they round up
    # into the next hour's bucket).
    base = 1_714_564_800.0
    times = [base + 3599.9996, base + 3599.9994, base + 12.3456789, base + 7199.99951]
    values = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 2}",
                "item_id": f"m{i % 3}",
                "ts": f"{_iso(t)}Z",
                "event_type": "watch",
            }
        )
        for i, t in enumerate(times)
    ]
    events = [fast_decode(v, "watch") for v in values]
    d = compute_deltas(events)
    hours = {h: dict(c) for h, c in d.pop_hour.items()}
    want: dict[int, dict[str, int]] = {}
    for ev in events:
        t = round(ev.epoch, 3)
        want.setdefault(int(t // 3600), {}).setdefault(ev.item_id, 0)
        want[int(t // 3600)][ev.item_id] += 1
    assert hours == want
    for uid, u in d.users.items():
        mine = [round(e.epoch, 3) for e in events if e.user_id == uid]
        assert u.last_active == max(mine)
        for item, t in u.recent.items():
            assert t == max(
                round(e.epoch, 3) for e in events if (e.user_id, e.item_id) == (uid, item)
            )
    assert d.max_ts == max(round(e.epoch, 3) for e in events)


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat()
