"""Property tests of the decoders on generated hostile input (hypothesis): whatever the
bytes, the JSON decoders, the fast path, the batch decoder, the CMU parser and the file
reader raise nothing but the project's validation error, and every path of the batch decoder
gives the reference decoder's answer. Pure: no services."""

from __future__ import annotations

import io
import string

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.files import read_events
from schemas.cmu import parse_line
from schemas.codec import decode_event
from schemas.errors import EventValidationError
from schemas.events import EVENT_TYPES
from streams.decode import decode_batch
from streams.fast_decode import FAST_TYPES, fast_decode

SETTINGS = settings(
    max_examples=300,
    deadline=None,  # a shared 2-core machine: no per-example time limit
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

FIELDS = sorted({name for model in EVENT_TYPES.values() for name in model.model_fields} | {"extra"})
HOSTILE_TS = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "2099-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
    "2024-05-01T12:00:00+23:59",
    "2024-05-01T12:00:00.1234567Z",
    "2024-02-30T00:00:00Z",
    "1714564800",
    "2024-05-01",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TS),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["watch", "rate", "feedback", "reco_request", "reco_response", "click"]),
    st.text(alphabet=string.ascii_letters + string.digits + "+-_.:", min_size=1, max_size=300),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
# Objects over the events' own field names, so generated documents get deep into validation.
documents = st.dictionaries(st.sampled_from(FIELDS), values, max_size=len(FIELDS))
event_types = st.sampled_from(sorted(EVENT_TYPES))


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    """Sometimes repeat a key, escape a character, cut the text or flip a byte."""
    kind = data.draw(st.sampled_from(["none", "repeat", "escape", "cut", "byte"]))
    if kind == "repeat" and raw.startswith(b'{"'):
        key = data.draw(st.sampled_from(FIELDS))
        value = orjson.dumps(data.draw(scalars))
        return b'{"' + key.encode() + b'":' + value + b"," + raw[1:]
    if kind == "escape" and b'"' in raw:
        i = raw.index(b'"') + 1
        return raw[:i] + b"\\u0061" + raw[i:]
    if kind == "cut" and raw:
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    if kind == "byte" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        return raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1 :]
    return raw


def _reference(raw: bytes, event_type: str):
    try:
        return decode_event(raw, expected_type=event_type)
    except EventValidationError as err:
        return err


def _check_agreement(raw: bytes, event_type: str) -> None:
    ref = _reference(raw, event_type)
    if event_type in FAST_TYPES:
        rec = fast_decode(raw, event_type)  # must not raise
        if rec is not None:
            assert not isinstance(ref, EventValidationError), (raw, ref)
            for name in type(ref).model_fields:
                assert getattr(rec, name) == getattr(ref, name), (name, raw)
    out = decode_batch([(0, b"k", raw, None)], event_type=event_type, topic="t", partition=0, now=0)
    if isinstance(ref, EventValidationError):
        assert out.events == [] and [d.reason for d in out.dead] == [ref.reason], raw
    else:
        assert out.dead == [] and len(out.events) == 1, raw
        for name in type(ref).model_fields:
            assert getattr(out.events[0], name) == getattr(ref, name), (name, raw)


@SETTINGS
@given(doc=documents, event_type=event_types, data=st.data())
def test_generated_objects_decode_alike_on_every_path(doc, event_type, data):
    if data.draw(st.booleans()):
        doc = {**doc, "event_type": event_type}
    raw = _mutate(orjson.dumps(doc), data)
    _check_agreement(raw, event_type)


@SETTINGS
@given(
    base=st.fixed_dictionaries(
        {
            "event_id": st.sampled_from(["e1", "a" * 128, "é", "x\\y"]),
            "user_id": st.sampled_from(["u", "42", "a,b", ""]),
            "item_id": st.sampled_from(["i", "the+matrix+1999", "y" * 257]),
            "ts": st.one_of(st.sampled_from(HOSTILE_TS), st.datetimes().map(str), scalars),
        }
    ),
    extra=st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=3),
    event_type=st.sampled_from(sorted(FAST_TYPES)),
    data=st.data(),
)
def test_nearly_valid_watch_and_rate_events_decode_alike(base, extra, event_type, data):
    doc = base | {"rating": 4} | extra if event_type == "rate" else base | extra
    raw = _mutate(orjson.dumps(doc), data)
    _check_agreement(raw, event_type)


@SETTINGS
@given(raw=st.binary(max_size=300), event_type=event_types)
def test_arbitrary_bytes_are_rejected_with_a_reason(raw, event_type):
    _check_agreement(raw, event_type)


@SETTINGS
@given(
    ts=st.one_of(st.sampled_from(HOSTILE_TS), st.text(max_size=30)),
    user=st.text(max_size=10),
    request=st.one_of(
        st.text(max_size=60),
        st.builds("GET /data/m/{}/{}.mpg".format, st.text(max_size=10), st.text("0123456789")),
        st.builds("GET /rate/{}={}".format, st.text(max_size=10), st.text("-.0123456789")),
        st.builds(
            "recommendation request {}, status {}, result: {}, {} ms".format,
            st.text(max_size=5),
            st.text("0123456789", max_size=30),
            st.text(max_size=30),
            st.text("0123456789. ", max_size=30),
        ),
    ),
)
def test_cmu_lines_parse_or_are_rejected_with_a_reason(ts, user, request):
    try:
        parse_line(f"{ts},{user},{request}", line_no=1)
    except EventValidationError as err:
        assert err.reason


@SETTINGS
@given(lines=st.lists(st.binary(max_size=80), max_size=8), fmt=st.sampled_from(["jsonl", "cmu"]))
def test_reading_any_file_yields_a_result_per_line(lines, fmt):
    blob = b"\n".join(lines)
    got = list(read_events(io.BytesIO(blob), fmt))
    assert all(isinstance(r, EventValidationError) or r.event_id for _, r in got)
    assert len(got) == sum(1 for line in blob.split(b"\n") if line.strip())
