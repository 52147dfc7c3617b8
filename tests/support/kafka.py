"""Test helper: read back what landed in a topic, from the real broker."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Read ``topic`` from the beginning until ``expected`` messages or ``timeout``; then
    linger briefly to catch any extra (duplicate) messages."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    idle_after_expected = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            for msg in batch:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(msg.error())
                    continue
                out.append(msg)
            if len(out) >= expected:
                idle_after_expected = idle_after_expected or time.monotonic()
                if not batch and time.monotonic() - idle_after_expected > 1.0:
                    break
    finally:
        consumer.close()
    return out
