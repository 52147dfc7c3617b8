"""The rollout document (:mod:`schemas.rollout`) as the controller uses it: read and written
in the registry's store next to the alias document, and turned into decision thresholds.

Everything the controller needs to resume lives there -- the plan, the status, the step,
the weight it wants and the baseline counters of the step -- so a restarted controller (or
another one) continues where the last one stopped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from models import rollouts
from models.registry import ModelRegistry
from rollout.decision import Thresholds
from schemas.rollout import Rollout, RolloutDocument

ACTOR = "rollout"
EVIDENCE_KEY = "rollout"


def thresholds(r: Rollout) -> Thresholds:
    return Thresholds(
        min_samples=r.min_samples,
        alpha=r.alpha,
        margin=r.margin,
        max_error_ratio_increase=r.max_error_ratio_increase,
        max_p99_ratio=r.max_p99_ratio,
        p99_slack_ms=r.p99_slack_ms,
    )


def plan_json(r: Rollout) -> dict:
    """The plan as written into the alias history's evidence."""
    return {
        "rollout_id": r.rollout_id,
        "version": r.version,
        "steps": r.steps,
        "step": r.step,
        "thresholds": thresholds(r).as_dict(),
        "settle_s": r.settle_s,
    }


class RolloutBook:
    """The rollout document of one registry model."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.store = registry.store
        self.name = registry.name

    def read(self) -> RolloutDocument:
        return rollouts.read(self.store, self.name)[0]

    def update(self, fn: Callable[[RolloutDocument], object]) -> RolloutDocument:
        return rollouts.update(self.store, self.name, fn, on_conflict=backoff)


def backoff(attempt: int) -> None:
    """Sleep a little longer after each lost compare-and-swap (writers race rarely)."""
    time.sleep(random.uniform(0, 0.005 * attempt))
