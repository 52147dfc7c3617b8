"""Integration tests: `produce` while the broker goes away. They run a throwaway single KRaft
broker of their own (other ports, a temporary data dir) and kill -9 it mid-run; the shared
broker on 9092 is never touched.

- A broker down for a minute is ridden out: every line arrives exactly once.
- A broker down past the delivery timeout: the run exits with the lines not delivered in a
  file, exactly those not in the topic, and producing that file completes the set."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from core.config import Settings
from core.kafka import EventProducer, delete_topics, ensure_topics
from ingest.errors import NotDelivered
from ingest.produce import produce_events
from streamrec.stack.base import process_alive
from streamrec.stack.kafka import KafkaService
from tests.support.kafka import consume_all
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

OUTAGE_S = 60  # the bar: a broker restart of a minute (the old 30 s timeout lost data)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    kafka, controller, jmx = free_ports(3)
    settings = (
        Settings()
        .model_copy(update={"data_dir": tmp_path_factory.mktemp("own-kafka")})
        .with_sections(
            kafka={
                "bootstrap": f"127.0.0.1:{kafka}",
                "controller_port": controller,
                "jmx_exporter_port": jmx,
                "heap": "-Xms128m -Xmx512m",
            }
        )
    )
    service = KafkaService(settings)
    service.start()
    try:
        service.wait_ready(120)
        yield service
    finally:
        service.stop(timeout=30)


def _kill(service: KafkaService) -> None:
    pid = service.pid()
    assert pid is not None, "the test broker is not running"
    os.kill(pid, signal.SIGKILL)
    while process_alive(pid):
        time.sleep(0.05)


def _restart(service: KafkaService) -> None:
    service.start()
    service.wait_ready(120)


@pytest.fixture
def own_settings(own_broker: KafkaService) -> Iterator[Settings]:
    if not own_broker.is_running():  # a failed test may have left it down
        _restart(own_broker)
    s = own_broker.settings.with_sections(kafka={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    ensure_topics(s.kafka)
    yield s
    if own_broker.is_running():
        delete_topics(s.kafka, timeout=10)


def _write_events(path: Path, n: int) -> list[bytes]:
    lines = [
        orjson.dumps(
            {
                "event_type": "watch",
                "event_id": f"w{i}",
                "user_id": str(i % 97),
                "item_id": str(i % 500),
                "ts": "2024-01-01T00:00:00Z",
            }
        )
        + b"\n"
        for i in range(n)
    ]
    path.write_bytes(b"".join(lines))
    return lines


def _ids_in_topic(settings: Settings, expected: int) -> Counter[str]:
    msgs = consume_all(settings.kafka.bootstrap, settings.topic("watch"), expected, timeout=90)
    return Counter(orjson.loads(m.value())["event_id"] for m in msgs)


def test_produce_rides_out_a_broker_down_for_a_minute(own_broker, own_settings, tmp_path):
    path = tmp_path / "events.jsonl"
    _write_events(path, 20_000)
    seen = 0
    restarted = threading.Event()
    timer = threading.Timer(OUTAGE_S, lambda: (_restart(own_broker), restarted.set()))

    def kill_mid_run() -> None:
        nonlocal seen
        seen += 1
        if seen == 5_000:  # messages are in flight: killed, not stopped cleanly
            _kill(own_broker)
            timer.start()

    try:
        report = produce_events(own_settings.kafka, str(path), on_line=kill_mid_run)
    finally:  # never leave a restart pending past the test (the fixtures restart it)
        timer.cancel()
        if timer.is_alive():
            timer.join()

    assert restarted.is_set()  # the run waited for the broker instead of giving up
    assert (report.sent, report.undelivered, report.failed_file) == (20_000, 0, None)
    ids = _ids_in_topic(own_settings, 20_000)
    assert set(ids) == {f"w{i}" for i in range(20_000)}
    assert max(ids.values()) == 1  # exactly once: the idempotent producer's retries dedupe


def test_lines_not_delivered_are_named_in_a_file_and_resending_it_completes_the_set(
    own_broker, own_settings, tmp_path
):
    settings = own_settings.with_sections(kafka={"delivery_timeout_ms": 3000})
    path = tmp_path / "events.jsonl"
    lines = _write_events(path, 6_000)
    producer = EventProducer(settings.kafka)
    seen = 0

    def kill_after_2000_delivered() -> None:
        nonlocal seen
        seen += 1
        if seen == 2_000:
            assert producer.flush(60).failed == 0  # lines 1-2000 are in the topic
            _kill(own_broker)  # and 2001-6000 will never reach a broker in 3 s

    with pytest.raises(NotDelivered) as info:
        produce_events(
            settings.kafka, str(path), producer=producer, on_line=kill_after_2000_delivered
        )

    failed = tmp_path / "events.jsonl.undelivered"
    assert info.value.count == 4_000 and info.value.path == str(failed)
    assert f"they are in {failed}: `streamrec produce --file {failed}`" in str(info.value)
    assert failed.read_bytes() == b"".join(lines[2_000:])  # the exact lines, in order

    _restart(own_broker)
    assert _ids_in_topic(settings, 2_000) == Counter(f"w{i}" for i in range(2_000))

    report = produce_events(settings.kafka, str(failed))  # the re-run of that file
    assert (report.sent, report.undelivered) == (4_000, 0)
    assert _ids_in_topic(settings, 6_000) == Counter(f"w{i}" for i in range(6_000))
