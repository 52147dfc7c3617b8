"""The rollout document (:mod:`schemas.rollout`) as the controller uses it: read and written
in the registry's store next to the alias document, and turned into decision thresholds.

Everything the controller needs to resume lives there -- the plan, the status, the step,
the weight it wants and the baseline counters of the step -- so a restarted controller (or
another one) continues where the last one stopped.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from models.registry import ModelRegistry
from rollout.decision import Thresholds
from schemas.rollout import Rollout, RolloutDocument, plan_from_settings, update_rollouts
from schemas.rollout import read_rollouts as _read

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


def new_rollout(
    settings: object, model: str, version: int, *, actor: str, reason: str = "", **overrides
) -> Rollout:
    """A requested rollout with the settings' defaults under ``overrides``; ValueError for
    a bad plan."""
    plan = plan_from_settings(settings, version, **overrides)
    return Rollout(
        **plan.model_dump(),
        rollout_id=uuid.uuid4().hex[:12],
        model=model,
        requested_at=datetime.now(UTC),
        requested_by=actor,
        reason=reason,
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
        return _read(self.store, self.name)[0]

    def update(self, fn: Callable[[RolloutDocument], object]) -> RolloutDocument:
        def backoff(attempt: int) -> None:
            time.sleep(random.uniform(0, 0.005 * attempt))

        return update_rollouts(self.store, self.name, fn, on_conflict=backoff)
