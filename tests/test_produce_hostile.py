"""Integration tests on the real broker: `produce` on hostile files. Every bad line is
rejected to the dead-letter topic with its reason (bounded in size, original bytes kept),
every good line is delivered, and an error mid-run still delivers what was accepted."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from core.kafka import EventProducer
from ingest.produce import produce_events
from schemas.codec import decode_event
from schemas.dead_letter import DeadLetter
from tests.support.kafka import consume_all

pytestmark = pytest.mark.integration


def _watch(i: int) -> bytes:
    doc = {
        "event_type": "watch",
        "event_id": f"w{i}",
        "user_id": str(i % 50),
        "item_id": str(i % 300),
        "ts": "2024-01-01T00:00:00Z",
    }
    return json.dumps(doc).encode() + b"\n"


def _event(ts: object = "2024-01-01T00:00:00Z", **fields: object) -> bytes:
    base = {"event_type": "watch", "event_id": "x", "user_id": "u", "item_id": "i", "ts": ts}
    return json.dumps(base | fields).encode()


BIG = b'{"event_type":"watch","event_id":"big","user_id":"u","item_id":"' + b"x" * 2_000_000
HOSTILE = [  # (line, what its dead letter's reason says)
    (_event("0001-01-01T00:00:00+01:00"), "ts: 0001-01-01T00:00:00+01:00 is out of range"),
    (_event("9999-12-31T23:59:59-01:00"), "ts: 9999-12-31T23:59:59-01:00 is out of range"),
    (_event(1714564800), "ts: Input should be a valid datetime string"),
    (_event(event_type="rate", rating="5"), "rating: Input should be a valid number"),
    (_event(event_type="rate", rating=True), "rating: Input should be a valid number"),
    (b'{"user_id":"v",' + _event()[1:], "user_id: duplicate key"),
    (_event()[:-2] + b'\xff"}', "not valid UTF-8 (at byte"),
    (BIG + b'","ts":"2024-01-01T00:00:00Z"}', "bytes is over the 65536 byte limit"),
]


def _letters(settings, n: int) -> list[DeadLetter]:
    msgs = consume_all(settings.kafka.bootstrap, settings.topic("dead_letter"), n)
    return [DeadLetter.from_message(m.value(), m.key(), m.headers()) for m in msgs]


def test_each_bad_line_costs_only_itself(topics, tmp_path):
    path = tmp_path / "hostile.jsonl"
    with path.open("wb") as f:
        f.writelines(_watch(i) for i in range(1000))
        f.writelines(line + b"\n" for line, _ in HOSTILE)
        f.writelines(_watch(i) for i in range(1000, 2000))

    report = produce_events(topics.kafka, str(path))

    assert (report.sent, report.rejected, report.undelivered) == (2000, len(HOSTILE), 0)
    msgs = consume_all(topics.kafka.bootstrap, topics.topic("watch"), 2000)
    ids = [decode_event(m.value()).event_id for m in msgs]
    assert len(ids) == 2000 and set(ids) == {f"w{i}" for i in range(2000)}
    letters = _letters(topics, len(HOSTILE))
    assert [d.source_offset for d in letters] == list(range(1001, 1001 + len(HOSTILE)))
    for d, (line, why) in zip(letters, HOSTILE, strict=True):
        assert why in d.reason, (why, d.reason)
        if len(line) <= 65536:
            assert d.value == line and not d.truncated  # the original bytes, unchanged
    big = letters[-1]
    assert big.truncated == ("value",) and len(big.value) < 300_000
    whole = HOSTILE[-1][0]
    assert big.value_size == len(whole)
    assert big.value_sha256 == hashlib.sha256(whole).hexdigest()
    assert whole.startswith(big.value)


def test_hostile_cmu_lines_are_rejected_and_the_rest_delivered(topics, tmp_path):
    good = [f"2024-02-07T05:30:{i % 60:02d},{i},GET /data/m/m{i}/{i}.mpg\n" for i in range(500)]
    bad = [
        "0001-01-01T00:00:00+01:00,1,GET /data/m/x/1.mpg\n",
        "9999-12-31T23:59:59-01:00,1,GET /data/m/x/1.mpg\n",
        "2024-02-07T05:30:53,1,GET /data/m/x/" + "9" * 5000 + ".mpg\n",
        "2024-02-07T05:30:53,1,recommendation request x, status 200, result: "
        + "1" * 70_000
        + "\n",
    ]
    path = tmp_path / "log.txt"
    path.write_text("".join(good[:250] + bad + good[250:]))

    report = produce_events(topics.kafka, str(path), "cmu")

    assert (report.sent, report.rejected) == (500, len(bad))
    msgs = consume_all(topics.kafka.bootstrap, topics.topic("watch"), 500)
    assert len({decode_event(m.value()).event_id for m in msgs}) == len(msgs) == 500
    reasons = [d.reason for d in _letters(topics, len(bad))]
    assert "timestamp '0001-01-01T00:00:00+01:00'" in reasons[0]
    assert "timestamp '9999-12-31T23:59:59-01:00'" in reasons[1]
    assert "minute: 5000 digits is out of range" in reasons[2]
    assert "over the 65536 byte limit" in reasons[3]


def test_an_error_mid_run_still_delivers_everything_accepted(topics, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_watch(i) for i in range(3000)))
    producer = EventProducer(topics.kafka)
    seen = 0

    def stop_after_1000() -> None:
        nonlocal seen
        seen += 1
        if seen == 1000:
            raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        produce_events(topics.kafka, str(path), producer=producer, on_line=stop_after_1000)
    # Waited for before the error left produce_events: nothing is left for a process exit
    # to drop (the CLI lost all 1,000 that way).
    assert producer.stats.produced == 1000  # the producer given is the one used (an idle
    assert len(producer) == 0 and producer.stats.failed == 0  # one was falsy: __len__ 0)
    msgs = consume_all(topics.kafka.bootstrap, topics.topic("watch"), 1000, timeout=30)
    assert sorted(decode_event(m.value()).event_id for m in msgs) == sorted(
        f"w{i}" for i in range(1000)
    )


def test_cli_rejects_invalid_utf8_and_huge_lines_without_a_traceback(topics, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_watch(1) + _event()[:-2] + b'\xc3("}\n' + BIG + b"\n" + _watch(2))
    env = {
        **os.environ,
        "STREAMREC_TOPIC_PREFIX": topics.kafka.topic_prefix,
        "STREAMREC_KAFKA_BOOTSTRAP": topics.kafka.bootstrap,
    }
    res = subprocess.run(
        [sys.executable, "-m", "streamrec", "produce", "--file", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 3, res.stderr
    err = " ".join(res.stderr.split())  # the console wraps long lines
    assert "sent 2 (watch=2), rejected 2" in err
    assert "line 2: invalid event: line: not valid UTF-8 (at byte 100: c3)" in err
    assert "line 3: invalid event: line: 2000064 bytes is over the 65536 byte limit" in err
    assert "Traceback" not in err
    assert not (tmp_path / "mixed.jsonl.undelivered").exists()
