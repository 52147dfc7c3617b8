"""The partitioning contract: serving finds a user's partition (and so the hash slot of the
user's Redis state) from the user id alone, so it must agree with what Kafka really does."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from schemas.topics import PARTITIONER, murmur2, partition_of

# Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest / kafka-python).
VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_of_checks_its_input() -> None:
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        partition_of("u", 0)
    assert {partition_of(str(u), 7) for u in range(500)} == set(range(7))


@pytest.mark.integration
def test_partition_of_is_where_the_broker_puts_the_key(stack: Settings) -> None:
    """librdkafka's murmur2_random and the contract's function agree on real deliveries,
    including ids that are not ASCII."""
    topic = f"t{uuid.uuid4().hex[:10]}.partitioning"
    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result()
    try:
        producer = Producer(
            {"bootstrap.servers": stack.kafka.bootstrap, "partitioner": PARTITIONER}
        )
        keys = [f"user-{i}" for i in range(300)] + ["é", "用户", "", "a" * 1000]
        for key in keys:
            producer.produce(topic, key=key.encode(), value=b"x")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": stack.kafka.bootstrap,
                "group.id": topic,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        seen: dict[str, int] = {}
        for _ in range(200):
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    seen[msg.key().decode()] = msg.partition()
            if len(seen) == len(keys):
                break
        consumer.close()
        assert len(seen) == len(keys)
        wrong = {k: p for k, p in seen.items() if p != partition_of(k, 6)}
        assert not wrong, wrong
    finally:
        admin.delete_topics([topic])


def test_every_key_of_a_partition_is_in_one_hash_slot() -> None:
    """What a Redis Cluster requires of the worker's scripts (schemas.redis_keys)."""
    from redis.crc import key_slot

    from schemas.redis_keys import RedisKeys

    keys = RedisKeys("sr", partitions=4)
    slots = set()
    for p in range(4):
        k = keys.slot(p)
        names = [
            k.user_recent("u1"),
            k.user_ratings("u2"),
            k.user_stats("u3"),
            k.user_genres("u4"),
            k.item_stats("m1"),
            k.pop_all,
            k.pop_hour(0),
            k.pop_day(0),
            k.watermark("t.watch", p),
            k.seen_ids("t.watch", p, 7),
            k.online_eval_hour(0),
            k.online_eval_bucket(0),
            k.online_eval_pending("u1"),
            k.online_eval_watermark("t.watch", p),
        ]
        assert all(n.startswith(f"sr:{{p{p}}}:") for n in names), names
        assert len({key_slot(n.encode()) for n in names}) == 1
        slots.add(key_slot(names[0].encode()))
    assert len(slots) == 4
    # Readers find a user's slot from the id; the global keys carry no tag.
    assert keys.user_slot("u9") == keys.slot(partition_of("u9", 4))
    assert keys.slot(2).base.trending == keys.trending == "sr:trending"
    for bad in ("", "a{b", "c}"):
        with pytest.raises(ValueError, match="without braces"):
            RedisKeys(bad)
