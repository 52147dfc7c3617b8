"""The producer client library (used by the CLI, the API and other teams' services) and
topic administration. Built on confluent-kafka's idempotent producer (acks=all)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import KafkaSettings
from core.errors import DeliveryFailed, KafkaError
from schemas.catalog import ItemRecord
from schemas.codec import encode_event
from schemas.events import Event
from schemas.topics import CATALOG, PARTITIONER, TOPICS

# Kafka record headers as confluent-kafka's produce() takes them.
Headers = list[tuple[str, str | bytes | None]]

log = logging.getLogger(__name__)

MAX_REASONS = 5


@dataclass
class DeliveryStats:
    produced: int = 0
    failed: int = 0
    dropped: int = 0  # refused locally because the queue was full (non-blocking sends)
    reasons: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.produced - self.failed


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap,
        # Idempotence gives exactly-once per partition for retries inside librdkafka and
        # implies acks=all; set both so the intent reads from the config.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        # Only failures call back into Python: successes are counted as produced - failed,
        # which keeps the per-message cost in C.
        "delivery.report.only.error": True,
        # Kafka's murmur2 (Java's default): the partition of a user is part of the contract,
        # serving finds the user's Redis slot by it (schemas.topics.partition_of).
        "partitioner": PARTITIONER,
        # How long librdkafka retries a message before reporting it failed: long enough to
        # ride out a broker restart (the queue fills meanwhile and send() waits).
        "message.timeout.ms": kafka.delivery_timeout_ms,
    }
    conf.update(overrides)
    return conf


class EventProducer:
    """Publishes typed events to ``<prefix>.<topic>``, keyed by user id.

    ``send`` blocks briefly when the local queue is full (back-pressure, for batch jobs);
    ``try_send`` never blocks and counts a drop instead (for request paths)."""

    def __init__(self, kafka: KafkaSettings, **config: Any) -> None:
        self.kafka = kafka
        self.stats = DeliveryStats()
        conf = producer_config(kafka, **config)
        # The default delivery callback: a message sent without its own costs no Python
        # object per send, and (delivery.report.only.error) it runs for failures only.
        conf["on_delivery"] = self._on_delivery
        self._producer = Producer(conf, error_cb=self._on_error, logger=log)

    def _on_error(self, err: Any) -> None:
        log.warning("kafka: %s", err)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.stats.failed += 1
            if len(self.stats.reasons) < MAX_REASONS:
                self.stats.reasons.append(str(err))

    def _on_delivery_then(self, on_failure: Callable[[str], None], err: Any, msg: Any) -> None:
        self._on_delivery(err, msg)
        if err is not None:
            on_failure(str(err))

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        *,
        block: bool = True,
        on_failure: Callable[[str], None] | None = None,
    ) -> bool:
        """Low-level send to a full topic name. False only when ``block=False`` and the
        queue is full. ``on_failure(reason)`` is called (from poll/flush) if this very
        message is not delivered, so a caller can tell which of its inputs to send again."""
        while True:
            try:
                if on_failure is None:  # the producer's default callback
                    self._producer.produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(
                        topic,
                        value,
                        key,
                        headers=headers,
                        on_delivery=partial(self._on_delivery_then, on_failure),
                    )
                self.stats.produced += 1
                return True
            except BufferError:
                if not block:
                    self.stats.dropped += 1
                    return False
                self._producer.poll(0.05)  # let deliveries drain the queue
            except KafkaException as err:
                raise KafkaError(
                    f"cannot produce to {topic}: {err}", bootstrap=self.kafka.bootstrap
                ) from err

    def produce_many(self, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
        """``produce`` of each (topic, key, value) -- note the order -- blocking while the
        queue is full: the loop of bulk jobs (replay), with nothing per message in Python
        but the call. Failures are counted and raised by ``flush`` as for ``produce``.
        Returns how many were queued."""
        send = self._producer.produce
        fast = slow = 0
        try:
            for topic, key, value in messages:
                try:
                    send(topic, value, key)
                    fast += 1
                except BufferError:  # the queue is full: produce() waits for room, counts it
                    self.produce(topic, value, key)
                    slow += 1
        except KafkaException as err:
            raise KafkaError(
                f"cannot produce to {topic}: {err}", bootstrap=self.kafka.bootstrap
            ) from err
        finally:
            self.stats.produced += fast
        return fast + slow

    def send(
        self,
        event: Event,
        *,
        block: bool = True,
        on_failure: Callable[[str], None] | None = None,
    ) -> bool:
        return self.produce(
            self.kafka.topic(event.TOPIC),
            encode_event(event),
            event.key,
            block=block,
            on_failure=on_failure,
        )

    def try_send(self, event: Event) -> bool:
        ok = self.send(event, block=False)
        self._producer.poll(0)
        return ok

    def send_item(self, item: ItemRecord) -> None:
        self.produce(self.kafka.topic(CATALOG), encode_event(item), item.key)

    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    def drain(self, grace_s: float = 30.0) -> int:
        """Wait until every message has its delivery report: each one is delivered or
        reported failed within the delivery timeout, so this waits that long (plus
        ``grace_s``) at most. Whatever is still queued then is purged, which reports it
        failed too. Returns how many were purged."""
        timeout = self.kafka.delivery_timeout_ms / 1000 + grace_s
        remaining = self._producer.flush(timeout)
        if remaining:
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.flush(grace_s)  # serves the purged messages' reports
        return remaining

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        """Wait for every delivery report. Raises DeliveryFailed if any message failed or
        is still undelivered after ``timeout``."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self.stats.failed += remaining
            self.stats.reasons.append(f"{remaining} still queued after {timeout:.0f} s")
        if self.stats.failed:
            raise DeliveryFailed(
                self.stats.failed, self.stats.reasons, bootstrap=self.kafka.bootstrap
            )
        return self.stats

    def __len__(self) -> int:
        return len(self._producer)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._producer.flush(10)


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka.bootstrap})


def check_kafka(kafka: KafkaSettings, timeout: float = 5.0) -> None:
    """Raise KafkaError if the cluster cannot be reached within ``timeout``."""
    try:
        admin_client(kafka).list_topics(timeout=timeout)
    except KafkaException as err:
        raise KafkaError(
            f"Kafka at {kafka.bootstrap} is unreachable: {err}",
            bootstrap=kafka.bootstrap,
        ) from None


def ensure_topics(kafka: KafkaSettings, timeout: float = 30.0) -> list[str]:
    """Create every topic of :data:`schemas.topics.TOPICS` that is missing; idempotent.
    Returns the names created."""
    admin = admin_client(kafka)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as err:
        raise KafkaError(
            f"Kafka at {kafka.bootstrap} is unreachable: {err}",
            bootstrap=kafka.bootstrap,
        ) from None
    new = []
    for spec in TOPICS:
        name = kafka.topic(spec.name)
        if name in existing:
            continue
        config = {"retention.ms": str(kafka.topic_retention_ms), **spec.config}
        if kafka.topic_min_insync_replicas > 1:  # 1 leaves the broker default in force
            config["min.insync.replicas"] = str(kafka.topic_min_insync_replicas)
        if spec.compacted:
            config.pop("retention.ms")
        new.append(
            NewTopic(
                name,
                num_partitions=spec.partitions or kafka.topic_partitions,
                replication_factor=kafka.topic_replication_factor,
                config=config,
            )
        )
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, request_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):  # lost a race with another creator
                raise KafkaError(
                    f"cannot create topic {name}: {err}", bootstrap=kafka.bootstrap
                ) from None
    if created:
        _await_on_every_broker(admin, created, timeout)
    return created


def _await_on_every_broker(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until every broker's metadata has ``names`` with a leader for each partition.

    Why every broker: KRaft brokers learn new topics from the metadata log asynchronously,
    and a client connects to whichever broker it likes -- one asking a broker that lags
    would see the topic missing (or leaderless) although it was created."""
    deadline = time.monotonic() + timeout
    brokers = admin.list_topics(timeout=timeout).brokers.values()
    for broker in brokers:
        # A client bootstrapped from one broker asks that broker (sparse connections).
        one = AdminClient({"bootstrap.servers": f"{broker.host}:{broker.port}"})
        while time.monotonic() < deadline:
            try:
                topics = one.list_topics(timeout=max(0.5, deadline - time.monotonic())).topics
            except KafkaException:
                topics = {}
            if all(
                n in topics
                and topics[n].partitions
                and all(p.leader >= 0 for p in topics[n].partitions.values())
                for n in names
            ):
                break
            time.sleep(0.1)


def delete_topics(kafka: KafkaSettings, timeout: float = 30.0) -> None:
    """Delete this prefix's topics (tests use throwaway prefixes)."""
    admin = admin_client(kafka)
    names = [kafka.topic(s.name) for s in TOPICS]
    existing = set(admin.list_topics(timeout=timeout).topics)
    doomed = [n for n in names if n in existing]
    if not doomed:  # confluent-kafka refuses an empty list with a ValueError
        return
    futures = admin.delete_topics(doomed, request_timeout=timeout)
    for fut in futures.values():
        fut.result()


def _offset_consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
        }
    )


def end_offsets(
    kafka: KafkaSettings, topics: list[str], timeout: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) watermarks of every partition of ``topics`` (missing topics are skipped)."""
    from confluent_kafka import TopicPartition

    consumer = _offset_consumer(kafka, "streamrec-offsets")
    try:
        meta = consumer.list_topics(timeout=timeout).topics
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout)
            for t in topics
            if t in meta
            for p in meta[t].partitions
        }
    except KafkaException as err:
        raise KafkaError(
            f"cannot read the offsets of {', '.join(topics)}: {err}",
            bootstrap=kafka.bootstrap,
        ) from None
    finally:
        consumer.close()


def group_lag(kafka: KafkaSettings, group_id: str, topics: list[str], timeout: float = 10.0) -> int:
    """Messages in ``topics`` not yet committed by consumer group ``group_id`` (a partition
    the group never committed counts from its low watermark)."""
    from confluent_kafka import TopicPartition

    marks = end_offsets(kafka, topics, timeout)
    if not marks:
        return 0
    consumer = _offset_consumer(kafka, group_id)
    try:
        tps = [TopicPartition(t, p) for t, p in marks]
        lag = 0
        for tp in consumer.committed(tps, timeout=timeout):
            low, high = marks[(tp.topic, tp.partition)]
            lag += max(0, high - max(tp.offset, low))
        return lag
    except KafkaException as err:
        raise KafkaError(
            f"cannot read the lag of group {group_id}: {err}", bootstrap=kafka.bootstrap
        ) from None
    finally:
        consumer.close()
