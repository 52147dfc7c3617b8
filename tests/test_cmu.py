"""Code tests: the CMU course log-line parser, including malformed lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.cmu import parse_line, parse_lines, parse_timestamp
from schemas.errors import EventValidationError, LogLineError
from schemas.events import RateEvent, RecoResponseEvent, WatchEvent


def test_watch_line():
    e = parse_line("2024-02-07T05:30:53,463441,GET /data/m/the+lion+king+1994/103.mpg")
    assert isinstance(e, WatchEvent)
    assert (e.user_id, e.item_id, e.minute, e.seconds) == ("463441", "the+lion+king+1994", 103, 60)
    assert e.ts == datetime(2024, 2, 7, 5, 30, 53, tzinfo=UTC)


def test_rate_line():
    e = parse_line("2024-02-07T05:30:53,12,GET /rate/the+godfather+1972=4")
    assert isinstance(e, RateEvent)
    assert (e.user_id, e.item_id, e.rating) == ("12", "the+godfather+1972", 4.0)


def test_recommendation_request_line():
    line = (
        "2024-02-07T05:31:02.512643,398934,recommendation request "
        "17645-team03.isri.cmu.edu:8082, status 200, result: m1, m2, the+matrix+1999, 254 ms"
    )
    e = parse_line(line)
    assert isinstance(e, RecoResponseEvent)
    assert e.items == ["m1", "m2", "the+matrix+1999"]
    assert (e.latency_ms, e.status, e.variant) == (254.0, 200, "external")


def test_failed_recommendation_request_keeps_status_and_no_items():
    e = parse_line(
        "2024-02-07T05:31:02,1,recommendation request x:8082, status 0, "
        "result: java.net.SocketTimeoutException: Read timed out, 800 ms"
    )
    assert (e.status, e.items, e.latency_ms) == (0, [], 800.0)


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2024-02-07T05:30:53", 0),
        ("2024-02-07T05:30:53.123", 123000),
        ("2024-02-07T05:30:53.123456", 123456),
        ("2024-02-07T05:30:53.123456789", 123456),  # nanoseconds truncated
        ("2024-02-07T05:30:53.5Z", 500000),
    ],
)
def test_timestamp_precisions(text, micro):
    ts = parse_timestamp(text)
    assert ts.tzinfo is UTC and ts.second == 53 and ts.microsecond == micro


def test_timestamp_with_offset_is_converted_to_utc():
    assert parse_timestamp("2024-02-07T05:30:53+02:00").hour == 3


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "expected '<time>,<user>,<request>'"),
        ("garbage", "expected '<time>,<user>,<request>'"),
        ("2024-02-07,1", "expected"),
        ("yesterday,1,GET /rate/x=4", "not ISO 8601"),
        ("2024-13-07T05:30:53,1,GET /rate/x=4", "month must be in 1..12"),
        ("2024-02-07T05:30:53,,GET /rate/x=4", "user_id"),
        ("2024-02-07T05:30:53,1,GET /rate/x=9", "rating"),
        ("2024-02-07T05:30:53,1,GET /rate/x=good", "unknown request"),
        ("2024-02-07T05:30:53,1,GET /data/m/x/abc.mpg", "unknown request"),
        ("2024-02-07T05:30:53,1,POST /login", "unknown request"),
        ("2024-02-07T05:30:53,a b,GET /rate/x=4", "user_id"),
    ],
)
def test_malformed_lines_raise_a_precise_error(line, why):
    with pytest.raises(LogLineError, match=why) as info:
        parse_line(line, line_no=7)
    assert "line 7" in str(info.value)


def test_parse_lines_yields_errors_in_place_and_skips_blanks():
    lines = [
        "2024-02-07T05:30:53,1,GET /rate/a=4\n",
        "\n",
        "nonsense\n",
        "2024-02-07T05:30:54,1,GET /data/m/a/0.mpg\n",
    ]
    out = list(parse_lines(lines))
    assert [type(x).__name__ for x in out] == ["RateEvent", "LogLineError", "WatchEvent"]
    assert isinstance(out[1], EventValidationError) and out[1].line_no == 3


def test_event_ids_are_deterministic_per_line():
    line = "2024-02-07T05:30:53,1,GET /rate/a=4"
    assert parse_line(line).event_id == parse_line(line).event_id
    assert parse_line(line).event_id != parse_line(line.replace("=4", "=5")).event_id


@pytest.mark.parametrize(
    ("line", "why"),
    [
        # astimezone raised OverflowError here (issue #18): now a reason like any other
        (
            "0001-01-01T00:00:00+01:00,1,GET /data/m/x/1.mpg",
            "timestamp '0001-01-01T00:00:00+01:00'",
        ),
        (
            "9999-12-31T23:59:59-01:00,1,GET /data/m/x/1.mpg",
            "timestamp '9999-12-31T23:59:59-01:00'",
        ),
        ("1969-12-31T23:59:59,1,GET /rate/x=4", "ts: 1969-12-31T23:59:59+00:00 is out of range"),
        ("2100-01-01T00:00:00,1,GET /rate/x=4", "ts: 2100-01-01T00:00:00+00:00 is out of range"),
        # int() refused the 5,000 digits with a ValueError (Python's digit limit)
        ("2024-02-07T05:30:53,1,GET /data/m/x/" + "9" * 5000 + ".mpg", "minute: 5000 digits"),
        (
            "2024-02-07T05:30:53,1,recommendation request x, status "
            + "2" * 5000
            + ", result: a, 1 ms",
            "status: 5000 digits",
        ),
        ("2024-02-07T05:30:53,1,GET /data/m/" + "x" * 70_000 + "/1.mpg", "over the 65536 limit"),
    ],
)
def test_hostile_lines_are_rejected_with_a_reason(line, why):
    with pytest.raises(LogLineError) as info:
        parse_line(line, line_no=3)
    assert why in info.value.reason and "line 3" in info.value.reason
    assert len(info.value.reason) < 1000
