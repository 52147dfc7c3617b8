"""Hostile input against the stream worker on the real broker and Redis (issue 18): a record
over Kafka's default size limit, events keyed by something other than their user, Kafka
refusing the dead letter itself, and a flood of unique item ids."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from core.config import Settings
from schemas.dead_letter import DEFAULT_MAX_BYTES, MIN_MAX_BYTES
from schemas.redis_keys import RedisKeys
from streams.worker import group_id
from tests.support.redis_view import user_hash
from tests.support.stream_worker import (
    BIG_LIMIT,
    TS,
    create_topics,
    produce,
    read_dead_letters,
    run_caught_up,
    watch_doc,
    worker_env,
)

pytestmark = pytest.mark.integration


def committed(s: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": group_id(s)})
    try:
        tps = [TopicPartition(s.topic(topic), p) for p in range(s.kafka.topic_partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


def n_watch(s: Settings, user: str) -> int:
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    return int(user_hash(r, RedisKeys(s.redis.key_prefix), user).get("n_watch", 0))


def big_value() -> bytes:
    # Incompressible, so lz4 does not bring it under any limit; 1.5 MB > Kafka's 1 MB.
    return (
        b'{"event_type":"watch","user_id":"big","blob":"'
        + os.urandom(1_500_000).hex().encode()[:1_500_000]
        + b'"}'
    )


def test_a_record_over_kafkas_limit_is_dead_lettered_cut_and_other_partitions_apply(
    settings: Settings,
) -> None:
    s = settings.with_sections(stream={"flush_interval_s": 1.0})
    create_topics(s, watch={"max.message.bytes": BIG_LIMIT})
    big = big_value()
    users = [f"u{i}" for i in range(12)]
    # Good events before and after the big one, in every partition (its own included).
    records = [("watch", u.encode(), watch_doc(i, u)) for i, u in enumerate(users)]
    records.append(("watch", b"big", big))
    records += [("watch", u.encode(), watch_doc(100 + i, u)) for i, u in enumerate(users)]
    where = produce(s, records)
    big_partition = where[len(users)][0]
    assert len({p for p, _ in where}) > 1  # other partitions are involved

    run_caught_up(s)

    assert {u: n_watch(s, u) for u in users} == dict.fromkeys(users, 2)
    (dead,) = read_dead_letters(s)
    assert (dead.source_partition, dead.source_offset) == where[len(users)]
    assert dead.truncated == ("value",)
    assert dead.value_size == len(big)
    assert dead.value_sha256 == hashlib.sha256(big).hexdigest()
    assert dead.value and big.startswith(dead.value) and len(dead.value) < DEFAULT_MAX_BYTES
    assert dead.reason and dead.key == b"big"
    # Everything committed, the big record's partition included.
    ends = {p: o + 1 for p, o in where}
    assert committed(s, "watch")[big_partition] == max(
        o for p, o in ends.items() if p == big_partition
    )


def test_a_dead_letter_refused_at_its_size_is_sent_again_cut_to_the_minimum(
    settings: Settings,
) -> None:
    s = settings.with_sections(stream={"flush_interval_s": 1.0})
    # The dead-letter topic takes less than the configured 256 KiB letter.
    create_topics(
        s, watch={"max.message.bytes": BIG_LIMIT}, dead_letter={"max.message.bytes": "100000"}
    )
    big = big_value()
    where = produce(s, [("watch", b"big", big), ("watch", b"u1", watch_doc(1, "u1"))])
    run_caught_up(s)
    (dead,) = read_dead_letters(s)
    assert dead.source_offset == where[0][1]
    assert dead.truncated == ("value",) and dead.value_size == len(big)
    assert dead.value and len(dead.value) <= MIN_MAX_BYTES and big.startswith(dead.value)
    assert n_watch(s, "u1") == 1


def test_a_dead_letter_kafka_refuses_for_good_stops_the_worker_loudly(
    settings: Settings, tmp_path: Path
) -> None:
    # Not even the minimal letter fits: retrying can never succeed, so the worker must exit
    # with a clear error (not hold and retry forever) and commit nothing past the record.
    s = settings
    create_topics(s, dead_letter={"max.message.bytes": "200"})
    where = produce(
        s,
        [("watch", b"u1", b"not an event at all"), ("watch", b"u1", watch_doc(1, "u1"))],
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
        env=worker_env(s),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error" in last and "refused" in last and "dead letter" in last, proc.stderr[-2000:]
    assert "MSG_SIZE_TOO_LARGE" in last
    partition = where[0][0]
    assert committed(s, "watch")[partition] < 0  # nothing committed there
    assert n_watch(s, "u1") == 0  # the event after the bad record was not applied either


def test_events_are_counted_once_whatever_their_key_the_rest_is_dead_lettered(
    topics: Settings,
) -> None:
    s = topics.with_sections(stream={"flush_interval_s": 1.0})
    same = watch_doc(1, "dupe-user")
    keys = [b"dupe-user", b"k1", b"k2", b"k3", b"k4", b"k5"]
    records = [("watch", k, same) for k in keys]
    records.append(("watch", None, watch_doc(2, "dupe-user")))  # no key at all
    records.append(
        (
            "rate",
            b"someone-else",
            orjson.dumps(
                {
                    "event_type": "rate",
                    "event_id": "r1",
                    "user_id": "u7",
                    "item_id": "m1",
                    "ts": TS,
                    "rating": 4.0,
                }
            ),
        )
    )
    where = produce(s, records)
    assert len({p for p, _ in where[:6]}) > 1  # the keys spread the copies over partitions
    run_caught_up(s)
    assert n_watch(s, "dupe-user") == 1
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    assert "n_rate" not in user_hash(r, RedisKeys(s.redis.key_prefix), "u7")
    dead = sorted(read_dead_letters(s), key=lambda d: (d.source_topic, d.source_offset))
    assert len(dead) == 7
    assert all(d.reason.startswith("key mismatch") for d in dead), [d.reason for d in dead]
    assert {d.key for d in dead} == {b"k1", b"k2", b"k3", b"k4", b"k5", None, b"someone-else"}
    assert all(d.value in (same, records[6][2], records[7][2]) for d in dead)
