"""The pure parts of the worker's defences (issue 18), without services: dead letters cut to
fit, the key rule, which Kafka errors are permanent, and stale temp files."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from core.errors import KafkaError
from core.storage.local import LocalStore
from schemas.dead_letter import HEADROOM_BYTES, MAX_KEY_BYTES, DeadLetter, truncate_payload
from streams.decode import decode_batch
from streams.errors import KafkaRejected
from streams.kafka_errors import is_permanent, permanent_cause
from streams.keys import check_keys
from streams.metrics import StreamMetrics
from streams.retry import retry
from tests.support.events import watch


def letter(value: bytes | None, key: bytes | None = b"u1") -> DeadLetter:
    return DeadLetter(value, key, "p.watch", 3, 17, "invalid watch event: too big", 1.5)


def test_truncate_payload_keeps_a_prefix_and_identifies_the_original() -> None:
    data = os.urandom(10_000)
    cut = truncate_payload(data, 100)
    assert cut.truncated and cut.data == data[:100] and cut.size == 10_000
    assert cut.sha256 == hashlib.sha256(data).hexdigest()
    whole = truncate_payload(data, 10_000)
    assert not whole.truncated and whole.data == data
    assert truncate_payload(None, 10) == truncate_payload(None, 0)
    assert truncate_payload(None, 10).data is None and truncate_payload(b"", 10).size == 0


def test_a_fitted_dead_letter_fits_says_so_and_reads_back() -> None:
    big = os.urandom(2_000_000)
    d = letter(big, key=b"k" * 5000).fit(65_536)
    assert d.truncated == ("key", "value")
    assert len(d.value) + len(d.key) + HEADROOM_BYTES <= 65_536 and big.startswith(d.value)
    assert len(d.key) == MAX_KEY_BYTES and d.key_size == 5000
    assert d.value_size == len(big) and d.value_sha256 == hashlib.sha256(big).hexdigest()
    headers = d.headers()
    assert sum(len(k) + len(v) for k, v in headers) < HEADROOM_BYTES
    back = DeadLetter.from_message(d.value, d.key, headers)
    assert back == d
    # Small letters are unchanged, but still carry the size and hash of their value.
    small = letter(b'{"x":1}').fit()
    assert small.value == b'{"x":1}' and small.truncated == () and small.value_size == 7
    assert ("sr-truncated", b"value") not in small.headers()
    # A null value stays null (no size), unlike an empty one.
    null, empty = letter(None).fit(), letter(b"").fit()
    assert null.value is None and null.value_size is None and empty.value_size == 0
    assert DeadLetter.from_message(None, b"u1", null.headers()).value_size is None


def test_events_keyed_by_anything_but_their_user_are_dead_letters() -> None:
    recs = [
        (0, b"u1", watch(0, user="u1"), None),
        (1, b"k1", watch(1, user="u1"), None),  # another key
        (2, None, watch(2, user="u1"), None),  # no key
        (3, b"u1", b"not json", None),  # bad anyway: the decoder's reason wins
        (4, "ü".encode(), watch(4, user="ü"), None),  # UTF-8 keys match
        (5, b"u1", watch(5, user="u2"), None),
    ]
    dec = decode_batch(recs, event_type="watch", topic="p.watch", partition=0, now=1.0)
    assert check_keys(recs, dec, topic="p.watch", partition=0, now=1.0) == 3
    assert dec.offsets == [0, 4] and [e.user_id for e in dec.events] == ["u1", "ü"]
    assert len(dec.produced_ms) == 2
    assert [d.source_offset for d in dec.dead] == [1, 2, 3, 5]
    reasons = {d.source_offset: d.reason for d in dec.dead}
    assert reasons[1] == "key mismatch: key 'k1' is not the event's user_id 'u1'"
    assert reasons[2].startswith("key mismatch: the record has no key")
    assert not reasons[3].startswith("key mismatch")
    assert {d.source_offset: d.key for d in dec.dead}[5] == b"u1"
    # All keys right: nothing moves.
    ok = decode_batch(recs[:1], event_type="watch", topic="p.watch", partition=0, now=1.0)
    assert check_keys(recs[:1], ok, topic="p.watch", partition=0, now=1.0) == 0


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (CKafkaError.MSG_SIZE_TOO_LARGE, True),
        (CKafkaError.INVALID_RECORD, True),
        (CKafkaError.TOPIC_AUTHORIZATION_FAILED, True),
        (CKafkaError.GROUP_AUTHORIZATION_FAILED, True),
        (CKafkaError._MSG_TIMED_OUT, False),
        (CKafkaError._TRANSPORT, False),
        (CKafkaError._ALL_BROKERS_DOWN, False),
        (CKafkaError.NOT_LEADER_FOR_PARTITION, False),
        (CKafkaError.UNKNOWN_TOPIC_OR_PART, False),
    ],
)
def test_which_kafka_errors_are_permanent(code: int, permanent: bool) -> None:
    assert is_permanent(CKafkaError(code)) is permanent
    wrapped = KafkaError("cannot produce")
    try:
        try:
            raise KafkaException(CKafkaError(code))
        except KafkaException as err:
            raise wrapped from err
    except KafkaError:
        pass
    assert (permanent_cause(wrapped) is not None) is permanent
    assert is_permanent(CKafkaError(CKafkaError._TRANSPORT, fatal=True))  # fatal: always


def test_retry_gives_up_at_once_on_a_permanent_kafka_error_only() -> None:
    calls: list[int] = []

    def fails(code: int, times: int):
        def fn() -> str:
            calls.append(code)
            if len(calls) <= times:
                raise KafkaError("produce failed") from KafkaException(CKafkaError(code))
            return "ok"

        return fn

    kw = {"sink": "kafka", "metrics": StreamMetrics(), "stop": threading.Event()}
    assert retry(fails(CKafkaError._MSG_TIMED_OUT, 2), first_backoff_s=0.001, **kw) == "ok"
    assert len(calls) == 3  # retried while transient
    calls.clear()
    with pytest.raises(KafkaRejected, match="MSG_SIZE_TOO_LARGE"):
        retry(fails(CKafkaError.MSG_SIZE_TOO_LARGE, 100), first_backoff_s=0.001, **kw)
    assert len(calls) == 1  # never retried


def test_stale_temp_files_are_removed_and_live_ones_kept(tmp_path) -> None:
    store = LocalStore(tmp_path)
    key = "events/event_type=watch/date=2024-01-01/part-p1-o1-o2.parquet"

    def temp(k: str, age: float) -> str:
        path = store._write_tmp(store._path(k), b"partial")
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    old, young = temp(key, 600), temp(key, 0)
    other_partition = temp(key.replace("part-p1-", "part-p11-"), 600)
    store.put(key, b"whole")
    removed = store.remove_stale_temp("events/", "part-p1-", time.time() - 60)
    assert removed == [old]
    assert os.path.exists(young) and os.path.exists(other_partition)
    assert store.get(key) == b"whole" and store.list("events/") == [key]
    assert store.remove_stale_temp("nothing/here/", "part-p1-", time.time()) == []
