"""A property test of the stream worker (confluent engine) on the real broker and Redis:
hypothesis generates batches of records -- valid watch and rate events with re-sent ids,
hostile JSON, wrong types, huge strings, binary garbage, null values, wrong keys -- and
after every batch the one worker, running all along, must still be up, every bad record
must be in the dead-letter topic with its reason, and Redis must equal the truth computed
from the good records alone, each counted exactly once (per partition, by event id)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from schemas.dead_letter import DeadLetter
from schemas.redis_keys import RedisKeys
from schemas.topics import DEAD_LETTER
from streams.app import create_app
from tests.support.redis_view import item_stats, pop_all
from tests.support.stream_worker import BIG_LIMIT, create_topics, produce, start_in_thread

pytestmark = pytest.mark.integration

USERS = ["u1", "u2", "u3", "ü-4", "user.5"]  # a non-ASCII id takes the pydantic path
ITEMS = ["m1", "m2", "m3", "m4", "ítem"]
# Fresh ids, and a few that recur: a re-sent id must count once (per partition).
IDS = st.sampled_from(["fresh"] * 3 + ["r1", "r2"]).flatmap(
    lambda i: st.uuids().map(lambda u: f"e{u.hex}") if i == "fresh" else st.just(i)
)
BLOB = os.urandom(1_300_000)  # huge values are slices of one blob (cheap to generate)


@dataclass(frozen=True)
class Rec:
    topic: str
    key: bytes | None
    value: bytes | None
    good: dict | None = None  # the event, when it must be applied
    mismatch: bool = False  # a valid event under a key other than its user id


# --- strategies -------------------------------------------------------------------------
timestamps = st.builds(
    lambda dt, h: dt.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=h))).isoformat(),
    st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1)),  # the accepted range, inside
    st.integers(-12, 14),
)


@st.composite
def events(draw) -> tuple[str, dict]:
    topic = draw(st.sampled_from(["watch", "rate"]))
    doc: dict = {
        "event_type": topic,
        "event_id": draw(IDS),
        "user_id": draw(st.sampled_from(USERS)),
        "item_id": draw(st.sampled_from(ITEMS)),
        "ts": draw(timestamps),
    }
    if topic == "rate":
        doc["rating"] = draw(st.sampled_from([0.5 * i for i in range(11)]))
    else:
        if draw(st.booleans()):
            doc["minute"] = draw(st.integers(0, 100_000))
        if draw(st.booleans()):
            doc["seconds"] = draw(st.floats(0, 86_400))
    return topic, doc


def good(pair: tuple[str, dict]) -> Rec:
    topic, doc = pair
    return Rec(topic, doc["user_id"].encode(), orjson.dumps(doc), good=doc)


@st.composite
def wrong_key(draw) -> Rec:
    topic, doc = draw(events())
    key = draw(st.one_of(st.none(), st.binary(max_size=40), st.sampled_from(USERS).map(str.encode)))
    if key == doc["user_id"].encode():
        key = None
    return Rec(topic, key, orjson.dumps(doc), mismatch=True)


# One field made invalid: a wrong type, out of range, malformed, too long, unknown, missing.
# (Nothing a lax parser might coerce, such as "1" for 1: strict typing is another test's.)
BAD_FIELDS: dict[str, list] = {
    "user_id": [None, 7, ["u1"], {}, True, "", "has space", "a,b", "x" * 300],
    "item_id": [None, 12, "", "tab\there", "y" * 300],
    "event_id": [None, 3.5, "", "z" * 200],
    "ts": [
        None,
        "yesterday",
        "2024-13-45T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # out of range once in UTC
        "9999-12-31T23:59:59-01:00",
        [],
    ],
    "rating": [None, -1.0, 5.5, "abc", []],  # on a watch event: an unknown field
    "minute": [-1, 2**63 - 1, "x", 100_001],  # on a rate event: an unknown field
    "event_type": ["other", "nope", 5],
    "schema_version": [0, 999, -3],
    "zzz": ["an unknown field"],
}
REQUIRED = {"user_id", "item_id", "event_id", "ts"}


@st.composite
def bad_field(draw) -> Rec:
    topic, doc = draw(events())
    name = draw(st.sampled_from(sorted(BAD_FIELDS)))
    value = draw(st.sampled_from(BAD_FIELDS[name]))
    if value == "other":
        value = "rate" if topic == "watch" else "watch"
    if (name in REQUIRED or (name, topic) == ("rating", "rate")) and draw(st.booleans()):
        doc.pop(name, None)  # missing altogether
    else:
        doc[name] = value
    user = doc.get("user_id")
    return Rec(topic, user.encode() if isinstance(user, str) and user else b"u1", orjson.dumps(doc))


def _duplicate_key(pair: tuple[str, dict]) -> Rec:
    topic, doc = pair
    raw = orjson.dumps(doc)[:-1] + b',"user_id":' + orjson.dumps(doc["user_id"] + "x") + b"}"
    return Rec(topic, doc["user_id"].encode(), raw)


hostile = st.one_of(
    st.binary(max_size=300).map(lambda b: Rec("watch", b"u1", b)),  # garbage
    st.just(Rec("watch", b"u1", None)),  # a null value
    st.just(Rec("rate", b"u1", b"")),  # an empty one
    st.recursive(  # JSON, but not an object
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        lambda c: st.lists(c, max_size=4),
        max_leaves=8,
    ).map(lambda v: Rec("watch", b"u1", orjson.dumps(v))),
    st.integers(10, 5000).map(lambda n: Rec("rate", b"u1", b"[" * n + b"]" * n)),  # deep
    st.integers(10, 3000).map(lambda n: Rec("watch", b"u1", b'{"a":' * n + b"1" + b"}" * n)),
    events().map(lambda p: Rec(p[0], b"u1", orjson.dumps(p[1])[:-3])),  # cut short
    events().map(lambda p: Rec(p[0], b"u1", orjson.dumps(p[1]).replace(b'"e', b'"\xff', 1))),
    events().map(_duplicate_key),
    st.sampled_from([70_000, 1_200_000]).map(  # over the event limit / Kafka's 1 MB
        lambda n: Rec("watch", b"u1", b'{"user_id":"' + BLOB[:n].hex().encode()[:n] + b'"}')
    ),
    bad_field(),
)
# The issue's reproductions, run first every time (hypothesis draws them only by chance).
_DOC = {
    "event_type": "watch",
    "event_id": "x-1",
    "user_id": "u2",
    "item_id": "m2",
    "ts": "2024-06-01T12:00:00+00:00",
}
ISSUE_CASES = [
    good(("watch", _DOC)),
    good(("watch", _DOC)),  # re-sent: counted once
    Rec("watch", b"k1", orjson.dumps(_DOC), mismatch=True),
    Rec("watch", None, orjson.dumps(_DOC), mismatch=True),
    *(
        Rec("watch", b"u", orjson.dumps({**_DOC, "user_id": "u", "ts": ts}))
        for ts in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
    ),
    _duplicate_key(("rate", {**_DOC, "event_type": "rate", "rating": 4.0})),
    Rec("watch", b"u1", None),
    Rec("rate", b"u1", b"[" * 5000 + b"]" * 5000),
    Rec("watch", b"u1", b'{"user_id":"' + BLOB[:1_200_000].hex().encode()[:1_200_000] + b'"}'),
    Rec("watch", b"u1", b"\xff\xfe\x00garbage"),
]

# Half the records are good, a tenth wrongly keyed, the rest hostile.
KINDS = {"good": events().map(good), "key": wrong_key(), "hostile": hostile}
records = st.sampled_from(["good"] * 5 + ["key"] + ["hostile"] * 4).flatmap(KINDS.__getitem__)


# --- truth ------------------------------------------------------------------------------
@dataclass
class Truth:
    seen: set = field(default_factory=set)  # (topic, partition, event id) applied
    user: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0.0]))
    item: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0.0]))
    pop_all: dict = field(default_factory=lambda: defaultdict(int))
    bad: dict = field(default_factory=dict)  # (topic, partition, offset) -> Rec

    def add(self, s: Settings, rec: Rec, partition: int, offset: int) -> None:
        if rec.good is None:
            self.bad[(s.topic(rec.topic), partition, offset)] = rec
            return
        doc = rec.good
        if (rec.topic, partition, doc["event_id"]) in self.seen:
            return  # a re-sent id: counted once
        self.seen.add((rec.topic, partition, doc["event_id"]))
        for stats in (self.user[doc["user_id"]], self.item[doc["item_id"]]):
            if rec.topic == "watch":
                stats[0] += 1
            else:
                stats[1] += 1
                stats[2] += doc["rating"]
        self.pop_all[doc["item_id"]] += 1


class DeadLetters:
    """Reads the dead-letter topic as it grows."""

    def __init__(self, s: Settings) -> None:
        self.c = Consumer(
            {
                "bootstrap.servers": s.kafka.bootstrap,
                "group.id": "fuzz",
                "enable.auto.commit": False,
            }
        )
        self.c.assign([TopicPartition(s.topic(DEAD_LETTER), 0, 0)])
        self.letters: list[DeadLetter] = []

    def read(self, expected: int, timeout: float = 20) -> list[DeadLetter]:
        deadline = time.monotonic() + timeout
        while len(self.letters) < expected and time.monotonic() < deadline:
            for m in self.c.consume(1000, 0.2):
                assert not m.error(), m.error()
                self.letters.append(DeadLetter.from_message(m.value(), m.key(), m.headers()))
        return self.letters


def wait_applied(
    s: Settings, r: redis.Redis, last: dict, thread: threading.Thread, errors: list
) -> None:
    """Until Redis's watermark of every partition written to reaches its last offset."""
    keys = RedisKeys(s.redis.key_prefix)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert thread.is_alive(), f"the worker stopped: {errors!r}"
        wms = [r.get(keys.slot(p).watermark(t, p)) for t, p in last]
        if all(w is not None and int(w) >= o for w, o in zip(wms, last.values(), strict=True)):
            return
        time.sleep(0.02)
    raise AssertionError(f"not applied in 30 s: {last}")


def check_redis(s: Settings, r: redis.Redis, truth: Truth) -> None:
    keys = RedisKeys(s.redis.key_prefix)
    for user in USERS:
        h = r.hgetall(keys.user_slot(user).user_stats(user))
        want = truth.user.get(user, [0, 0, 0.0])
        got = [int(h.get("n_watch", 0)), int(h.get("n_rate", 0)), float(h.get("rating_sum", 0))]
        assert got[:2] == want[:2] and got[2] == pytest.approx(want[2]), user
    for item in ITEMS:
        h = item_stats(r, keys, item)
        want = truth.item.get(item, [0, 0, 0.0])
        assert [int(h.get("n_watch", 0)), int(h.get("n_rate", 0))] == want[:2], item
    pop = {k: int(v) for k, v in pop_all(r, keys).items()}
    assert pop == {k: v for k, v in truth.pop_all.items() if v}


def check_dead(dead: list[DeadLetter], truth: Truth) -> None:
    by_source = {(d.source_topic, d.source_partition, d.source_offset): d for d in dead}
    assert len(by_source) == len(dead), "a dead letter was sent twice"
    extra = [(d.reason, d.value) for w, d in by_source.items() if w not in truth.bad]
    assert not extra, f"good records dead-lettered: {extra}"
    assert set(by_source) == set(truth.bad)
    for where, rec in truth.bad.items():
        d = by_source[where]
        assert d.reason, where
        assert d.reason.startswith("key mismatch") == rec.mismatch, (where, d.reason)
        if rec.value is None:
            assert d.value is None and d.value_size is None
        else:
            assert d.value_size == len(rec.value)
            assert d.value_sha256 == hashlib.sha256(rec.value).hexdigest()
            assert d.value is not None and rec.value.startswith(d.value)
            assert (d.value == rec.value) == ("value" not in d.truncated)
        assert d.key == (rec.key[:1024] if rec.key is not None else None)


def test_the_worker_survives_hostile_batches_and_applies_good_events_exactly_once(
    settings: Settings,
) -> None:
    s = settings.with_sections(stream={"metrics_port": -1, "flush_interval_s": 1.0})
    create_topics(s, watch={"max.message.bytes": BIG_LIMIT}, rate={"max.message.bytes": BIG_LIMIT})
    worker = create_app(s)
    thread, errors = start_in_thread(worker)
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    truth = Truth()
    dlq = DeadLetters(s)

    @hsettings(
        max_examples=30,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(records, min_size=1, max_size=12))
    @example(ISSUE_CASES)
    def feed(batch: list[Rec]) -> None:
        where = produce(s, [(rec.topic, rec.key, rec.value) for rec in batch])
        last: dict = {}
        for rec, (p, off) in zip(batch, where, strict=True):
            truth.add(s, rec, p, off)
            last[(s.topic(rec.topic), p)] = max(off, last.get((s.topic(rec.topic), p), -1))
        wait_applied(s, r, last, thread, errors)
        check_dead(dlq.read(len(truth.bad)), truth)
        check_redis(s, r, truth)

    try:
        feed()
    finally:
        worker.stop()
        thread.join(60)
        dlq.c.close()
    assert not errors, errors
    print(
        "FUZZ",
        len(truth.bad),
        len(truth.seen),
        sum(r.mismatch for r in truth.bad.values()),
        sum(1 for r in truth.bad.values() if r.value and len(r.value) > 1_000_000),
    )
    assert len(truth.bad) > 0 and len(truth.seen) > 0
