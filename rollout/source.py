"""Where the controller's numbers come from: an abstract source of cumulative per-variant
counters, and snapshots of them that subtract into the numbers of one step."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rollout.decision import ArmStats
from rollout.stats import bucket_delta

PRODUCTION = "production"
CANARY = "canary"


@dataclass(frozen=True)
class Snapshot:
    """Numbers per variant (``production``, ``canary``) at one moment: ``served`` and
    ``converted`` count the cohort of responses served since the snapshot's ``since``
    (their conversions included whenever they came); ``requests``, ``errors``,
    ``timeouts``, ``degraded`` and the latency buckets are the API's cumulative counters
    of the users assigned to the variant, which :meth:`minus` subtracts."""

    arms: dict[str, ArmStats] = field(default_factory=dict)

    def arm(self, variant: str) -> ArmStats:
        return self.arms.get(variant, ArmStats())

    def minus(self, before: Snapshot) -> Snapshot:
        """The API's counters between ``before`` and this snapshot (a counter that went
        down -- the API restarted -- counts from zero); the cohort counts are kept."""
        out = {}
        for variant, now in self.arms.items():
            old = before.arm(variant)

            def d(a: float, b: float) -> float:
                return a - b if a >= b else a

            restarted = now.requests < old.requests
            out[variant] = ArmStats(
                served=now.served,
                converted=now.converted,
                requests=d(now.requests, old.requests),
                errors=now.errors if restarted else d(now.errors, old.errors),
                latency_buckets=tuple(bucket_delta(now.latency_buckets, old.latency_buckets)),
                timeouts=now.timeouts if restarted else d(now.timeouts, old.timeouts),
                degraded=now.degraded if restarted else d(now.degraded, old.degraded),
            )
        return Snapshot(out)

    def to_json(self) -> dict:
        return {
            v: {
                "served": a.served,
                "converted": a.converted,
                "requests": a.requests,
                "errors": a.errors,
                "timeouts": a.timeouts,
                "degraded": a.degraded,
                "buckets": [["+Inf" if math.isinf(b) else b, c] for b, c in a.latency_buckets],
            }
            for v, a in self.arms.items()
        }

    @classmethod
    def from_json(cls, doc: Mapping) -> Snapshot:
        arms = {}
        for v, a in doc.items():
            arms[v] = ArmStats(
                served=int(a.get("served", 0)),
                converted=int(a.get("converted", 0)),
                requests=float(a.get("requests", 0)),
                errors=float(a.get("errors", 0)),
                latency_buckets=tuple((float(b), float(c)) for b, c in a.get("buckets", [])),
                timeouts=float(a.get("timeouts", 0)),
                degraded=float(a.get("degraded", 0)),
            )
        return cls(arms)


class MetricsSource(ABC):
    """Cumulative numbers of the production and canary versions of a model."""

    @abstractmethod
    def snapshot(
        self, model: str, production_version: int, canary_version: int, since: datetime
    ) -> Snapshot:
        """Both variants' cohort of responses served from ``since`` on (the step's start)
        and the API's request counters since it started."""
