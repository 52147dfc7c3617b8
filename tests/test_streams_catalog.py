"""The catalog reader on the real broker: it reads the whole compacted topic up to the end
offsets seen at the start, under one stable consumer group id (never joined or committed),
and a topic that is not available yet is an error the worker retries, not an empty catalog."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from core.config import Settings
from core.errors import KafkaError
from core.kafka import EventProducer
from schemas.catalog import ItemRecord
from streams.catalog import Catalog

pytestmark = pytest.mark.integration


def catalog_groups(s: Settings) -> set[str]:
    admin = AdminClient({"bootstrap.servers": s.kafka.bootstrap})
    groups = admin.list_consumer_groups().result(timeout=30).valid
    return {g.group_id for g in groups if g.group_id.startswith(f"{s.kafka.topic_prefix}.")}


def test_catalog_reads_to_the_end_under_one_stable_group(topics: Settings) -> None:
    with EventProducer(topics.kafka) as p:
        for i in range(30):
            p.send_item(ItemRecord(item_id=f"m{i}", title=f"Movie {i}", genres=["Drama"]))
        p.flush()
    written: list[int] = []
    for _ in range(2):  # two worker starts
        cat = Catalog(
            topics.kafka, topics.stream.app_id, on_items=lambda items: written.append(len(items))
        )
        try:
            assert cat.bootstrap(timeout=30) == 30
            assert cat.genres["m7"] == ("Drama",)
        finally:
            cat.close()
    assert sum(written) == 60  # mirrored to Redis on each start
    # No fresh group id per start (at most the one stable, never-committed id).
    stable = f"{topics.kafka.topic_prefix}.{topics.stream.app_id}.catalog-reader"
    assert catalog_groups(topics) <= {stable}


def test_a_catalog_topic_not_available_yet_is_retried_not_read_as_empty(
    stack: Settings, settings: Settings
) -> None:
    cat = Catalog(
        settings.kafka, settings.stream.app_id, on_items=lambda items: None
    )  # its topics were never created
    try:
        with pytest.raises(KafkaError):
            cat.bootstrap(timeout=5)
        assert cat.genres == {}
    finally:
        cat.close()
