"""The live :class:`MetricsSource`: conversions from the online-evaluation counters the
stream processor keeps in Redis (per Kafka partition: summed over every partition's slot),
requests / errors / latency from the API's ``/metrics`` (scraped directly and parsed with
prometheus_client's text parser)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from datetime import datetime

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisClusterException

from core.config import Settings
from core.redis import connect
from rollout.decision import ArmStats
from rollout.errors import MetricsUnavailable
from rollout.source import CANARY, PRODUCTION, MetricsSource, Snapshot
from schemas.redis_keys import (
    ONLINE_EVAL_BUCKET_S,
    ONLINE_EVAL_BUCKET_TTL_S,
    RedisKeys,
    online_eval_field,
)
from schemas.rollout import (
    ANSWERED_PRODUCTION,
    MODEL_FAULT_REASONS,
    NO_REASON,
    RECOMMEND_METRIC,
)

log = logging.getLogger(__name__)


def bucket_epochs(since: float, until: float) -> list[int]:
    """Start of every online-evaluation bucket that begins at or after ``since`` and before
    ``until`` (within the buckets' retention). A bucket that began before ``since`` is left
    out: it holds responses served before the step."""
    start = max(since, until - ONLINE_EVAL_BUCKET_TTL_S)
    first = math.ceil(start / ONLINE_EVAL_BUCKET_S) * ONLINE_EVAL_BUCKET_S
    return list(range(int(first), int(until) + 1, ONLINE_EVAL_BUCKET_S))


def parse_requests(text: str, variant: str, version: int) -> ArmStats:
    """Requests of the users assigned to ``variant`` ``version``, from the API's exposition
    text (:data:`~schemas.rollout.RECOMMEND_METRIC`): how many, how many failed (5xx, model
    timeouts, other model failures) and their latency buckets -- whatever answered them."""
    requests = errors = timeouts = degraded = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != RECOMMEND_METRIC:
            continue
        for sample in family.samples:
            lab = sample.labels
            if lab.get("assigned_variant") != variant or lab.get("assigned_version") != str(
                version
            ):
                continue
            if sample.name.endswith("_count"):
                requests += sample.value
                reason = lab.get("fallback_reason", NO_REASON)
                if lab.get("status", "").startswith("5"):
                    errors += sample.value
                elif reason == "timeout":
                    timeouts += sample.value
                elif reason in MODEL_FAULT_REASONS or (
                    lab.get("answered_by") == ANSWERED_PRODUCTION and variant == CANARY
                ):
                    degraded += sample.value
            elif sample.name.endswith("_bucket"):
                le = float(lab["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return ArmStats(
        requests=requests,
        errors=errors,
        latency_buckets=tuple(sorted(buckets.items())),
        timeouts=timeouts,
        degraded=degraded,
    )


class LiveMetricsSource(MetricsSource):
    def __init__(
        self,
        *,
        redis_url: str,
        key_prefix: str,
        api_url: str,
        partitions: int = 4,
        cluster: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        """``partitions``: the event topics' partition count (the online-evaluation counters
        are kept per partition); ``cluster``: ``redis_url`` is a node of a Redis Cluster."""
        self.keys = RedisKeys(key_prefix, partitions)
        self.api_url = api_url.rstrip("/")
        self.redis_url = redis_url
        # A wrong cluster configuration fails here, in one line (core.redis.RedisConfigError).
        self._redis = connect(
            redis_url, cluster=cluster, decode_responses=True, socket_timeout=timeout_s
        )
        self._http = httpx.Client(timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, api_url: str | None = None) -> LiveMetricsSource:
        """Redis of the Redis section; the API's /metrics at ``api_url``, else the rollout
        section's, else the local API's port (the serve section's)."""
        s = settings
        url = api_url or s.rollout.api_url or f"http://127.0.0.1:{s.serve.port}"
        return cls(
            redis_url=s.redis.url,
            key_prefix=s.redis.key_prefix,
            api_url=url,
            partitions=s.kafka.topic_partitions,
            cluster=s.redis.cluster,
        )

    def counters(
        self, model: str, arms: dict[str, int], since: float, until: float
    ) -> dict[str, tuple[int, int]]:
        """(served, converted) per variant of the responses served from ``since`` (the
        first bucket boundary after it) to ``until``, whenever their conversions came."""
        fields = [
            online_eval_field(model, version, variant, metric)
            for variant, version in arms.items()
            for metric in ("served", "converted")
        ]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for epoch in bucket_epochs(since, until):
                    for slot in self.keys.all_slots():
                        pipe.hmget(slot.online_eval_bucket(epoch), fields)
                rows = pipe.execute()
        except (redis.RedisError, RedisClusterException, OSError) as err:
            raise MetricsUnavailable("redis", self.redis_url, str(err)) from None
        totals = [0] * len(fields)
        for row in rows:
            for n, value in enumerate(row):
                totals[n] += int(value or 0)
        return {variant: (totals[2 * n], totals[2 * n + 1]) for n, variant in enumerate(arms)}

    def scrape(self) -> str:
        url = f"{self.api_url}/metrics"
        try:
            resp = self._http.get(url)
            resp.raise_for_status()
        except httpx.HTTPError as err:
            raise MetricsUnavailable("api", url, str(err)) from None
        return resp.text

    def snapshot(
        self, model: str, production_version: int, canary_version: int, since: datetime
    ) -> Snapshot:
        arms = {PRODUCTION: production_version, CANARY: canary_version}
        counts = self.counters(model, arms, since.timestamp(), time.time())
        text = self.scrape()
        out = {}
        for variant, version in arms.items():
            served, converted = counts[variant]
            req = parse_requests(text, variant, version)
            out[variant] = dataclasses.replace(req, served=served, converted=converted)
        return Snapshot(out)

    def close(self) -> None:
        self._http.close()
        self._redis.close()
