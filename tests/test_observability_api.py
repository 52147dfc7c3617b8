"""The API's /metrics exports the registry facts the dashboards and alerts use (live
versions, model age, offline metrics, canary weight, alias history) and follows alias
changes made while it runs: a real registry in storage, the real app on the real Redis."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from core.config import Settings
from core.storage import open_store
from models import ModelRegistry, PopularityModel
from schemas.manifest import TrainingData
from serving import create_app
from tests.support.serving import running_client

pytestmark = pytest.mark.integration


def _value(text: str, family: str, /, **labels: str) -> float | None:
    want = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"{re.escape(family)}\{{(.*)\}} (\S+)$", line)
        if m and sorted(m.group(1).split(",")) == want:
            return float(m.group(2))
    return None


def _publish(registry: ModelRegistry, ndcg: float) -> int:
    model = PopularityModel(np.array(["1", "2", "3"]), np.array([3.0, 2.0, 1.0]))
    card = registry.publish(
        model,
        training_data=TrainingData(n_events=3),
        params={},
        metrics={"popularity": {"ndcg@10": ndcg}},
    )
    return card.version


def test_metrics_follow_publish_promote_canary_and_rollback(topics: Settings) -> None:
    s = topics.with_sections(serve={"alias_poll_s": 0.2, "preload": True})
    registry = ModelRegistry(open_store(s.storage), s.model_name)
    v1 = _publish(registry, 0.11)
    registry.promote(v1)
    v2 = _publish(registry, 0.22)
    app = create_app(s)

    async def scrape_until(client, predicate, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = (await client.get("/metrics")).text
            if predicate(text) or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.1)

    async def go() -> tuple[str, str, str]:
        async with running_client(app) as c:
            live = "streamrec_model_live_version"
            first = await scrape_until(
                c, lambda t: _value(t, live, name="reco", variant="production") == v1
            )
            await asyncio.to_thread(registry.promote, v2)
            await asyncio.to_thread(registry.set_canary, v1, 25.0, rollout_id="r1")
            second = await scrape_until(
                c, lambda t: _value(t, live, name="reco", variant="canary") == v1
            )
            await asyncio.to_thread(registry.clear_canary)
            await asyncio.to_thread(registry.rollback, reason="test")
            third = await scrape_until(
                c,
                lambda t: (
                    _value(t, "streamrec_alias_changes_total", name="reco", action="rollback") == 1
                ),
            )
            return first, second, third

    first, second, third = asyncio.run(go())
    card1 = registry.manifest(v1)
    assert _value(first, "streamrec_model_live_version", name="reco", variant="production") == v1
    created = "streamrec_model_created_timestamp_seconds"
    assert _value(
        first, created, name="reco", version=str(v1), variant="production"
    ) == pytest.approx(card1.created_at.timestamp())
    offline = "streamrec_model_offline_metric"
    assert _value(
        first, offline, name="reco", version=str(v1), variant="production", metric="ndcg@10"
    ) == pytest.approx(0.11)
    assert _value(first, "streamrec_canary_weight", name="reco") == 0
    assert _value(first, "streamrec_alias_changes_total", name="reco", action="publish") == 2

    assert _value(second, "streamrec_model_live_version", name="reco", variant="production") == v2
    assert _value(second, "streamrec_canary_weight", name="reco") == 25
    assert _value(
        second, offline, name="reco", version=str(v2), variant="production", metric="ndcg@10"
    ) == pytest.approx(0.22)

    assert _value(third, "streamrec_model_live_version", name="reco", variant="production") == v1
    assert _value(third, "streamrec_model_live_version", name="reco", variant="canary") is None
    assert _value(third, "streamrec_canary_weight", name="reco") == 0
    assert _value(third, created, name="reco", version=str(v2), variant="production") is None
