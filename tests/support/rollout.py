"""Support for the rollout tests: a metrics source with fixed figures for the controller, and
a harness that feeds reco responses and watches through the online-eval join on real Redis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import redis

from rollout.decision import ArmStats
from rollout.source import MetricsSource, Snapshot
from schemas.events import RecoResponseEvent, WatchEvent
from schemas.redis_keys import RedisKeys, online_eval_field
from streams.online_eval import OnlineEval
from streams.redis_slots import SlotRunner


class FixedSource(MetricsSource):
    """Responses the test serves by hand, stamped with the time they were added (a stand-in
    for the online-evaluation buckets in Redis and the API's /metrics)."""

    def __init__(self) -> None:
        self.served: list[tuple[datetime, str, int, int]] = []

    def add(self, variant: str, served: int, converted: int) -> None:
        self.served.append((datetime.now(UTC), variant, served, converted))

    def snapshot(self, model: str, production_version: int, canary_version: int, since: datetime):
        arms = {}
        for variant in ("production", "canary"):
            rows = [(s, c) for at, v, s, c in self.served if v == variant]
            requests = float(sum(s for s, _ in rows))  # cumulative, as the API counts
            cohort = [(s, c) for at, v, s, c in self.served if v == variant and at >= since]
            buckets = ((0.01, requests), (math.inf, requests))
            arms[variant] = ArmStats(
                sum(s for s, _ in cohort), sum(c for _, c in cohort), requests, 0.0, buckets
            )
        return Snapshot(arms)


def resp(rid: str, user: str, items: list[str], at: float, variant="canary", version="2"):
    return RecoResponseEvent(
        event_id=f"{rid}.r",
        request_id=rid,
        user_id=user,
        items=items,
        model_name="reco",
        model_version=version,
        variant=variant,
        latency_ms=1.0,
        ts=T0 + timedelta(seconds=at),
    )


def watch(user: str, item: str, at: float):
    return WatchEvent(
        event_id=f"{user}.{item}.{at}", user_id=user, item_id=item, ts=T0 + timedelta(seconds=at)
    )


class Harness:
    """The join on the real Redis, with the features' ``recent`` ZSET written by hand as
    the stream processor's feature script does (item -> last watch time)."""

    def __init__(self, settings, window_s=60.0, cap=50):
        self.r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        # Partition 0's keys: every event here is sent on partition 0.
        self.keys = RedisKeys(settings.redis.key_prefix).slot(0)
        self.oe = OnlineEval(SlotRunner(self.r, url="test"), self.keys, window_s=window_s, cap=cap)
        self.offsets = {RESP: 0, WATCH: 0}

    def send(self, *events, features=True, partition=0, offsets=None):
        for n, e in enumerate(events):
            topic = RESP if isinstance(e, RecoResponseEvent) else WATCH
            off = offsets[n] if offsets else self.offsets[topic]
            self.offsets[topic] = max(self.offsets[topic], off + 1)
            if features and isinstance(e, WatchEvent):
                self.r.zadd(self.keys.user_recent(e.user_id), {e.item_id: e.epoch}, gt=True)
            self.oe.add(topic, partition, [e], [off])
        return self.oe.apply()

    def count(self, metric, variant="canary", version="2"):
        key = self.keys.online_eval_hour(T0.timestamp())
        return int(self.r.hget(key, online_eval_field("reco", version, variant, metric)) or 0)


T0 = datetime(2024, 5, 1, 12, 10, tzinfo=UTC)


RESP = "p.reco_responses"


WATCH = "p.watch"
