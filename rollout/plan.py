"""A rollout's plan and where it stands, read back from the registry's alias document.

Everything the controller needs to resume lives in the alias document: the canary alias
(version, weight, rollout id, since) and, in the evidence of the history entry that set the
current weight, the plan (steps, thresholds) and the baseline snapshot of the step. So a
restarted controller -- or another one -- continues where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rollout.decision import Thresholds, parse_steps
from rollout.source import Snapshot
from schemas.manifest import AliasDocument

ACTOR = "rollout"
EVIDENCE_KEY = "rollout"


@dataclass(frozen=True)
class RolloutPlan:
    rollout_id: str
    version: int
    steps: tuple[float, ...]
    thresholds: Thresholds
    settle_s: float

    def __post_init__(self) -> None:
        parse_steps(list(self.steps))  # raises ValueError on a bad plan
        if self.steps[0] >= 100:
            raise ValueError("the first step must be below 100 (100 is the promotion)")

    @property
    def evaluated(self) -> tuple[float, ...]:
        """Weights at which canary and production are compared; reaching 100 promotes."""
        return tuple(s for s in self.steps if s < 100)

    def to_json(self) -> dict:
        return {
            "rollout_id": self.rollout_id,
            "version": self.version,
            "steps": list(self.steps),
            "thresholds": self.thresholds.as_dict(),
            "settle_s": self.settle_s,
        }

    @classmethod
    def from_json(cls, doc: dict) -> RolloutPlan:
        return cls(
            rollout_id=str(doc["rollout_id"]),
            version=int(doc["version"]),
            steps=tuple(float(s) for s in doc["steps"]),
            thresholds=Thresholds(**doc.get("thresholds", {})),
            settle_s=float(doc.get("settle_s", 0.0)),
        )


@dataclass(frozen=True)
class RolloutState:
    plan: RolloutPlan
    step: int  # index into plan.evaluated
    weight: float
    production_version: int
    started_at: datetime  # when the canary (this rollout) began
    step_started_at: datetime  # the step's cohort: responses served from here on
    baseline: Snapshot  # counters when this step began

    @property
    def is_last_step(self) -> bool:
        return self.step + 1 >= len(self.plan.evaluated)

    @property
    def next_weight(self) -> float | None:
        """The next weight, or None when passing this step promotes."""
        return None if self.is_last_step else self.plan.evaluated[self.step + 1]


def current_rollout(doc: AliasDocument) -> RolloutState | None:
    """The rollout the controller manages, or None (no canary, or a canary set by hand)."""
    canary, production = doc.canary, doc.production
    if canary is None or production is None:
        return None
    for change in reversed(doc.history):
        if change.action not in ("canary", "canary_weight") or change.version != canary.version:
            continue
        info = change.evidence.get(EVIDENCE_KEY)
        if not isinstance(info, dict) or info.get("rollout_id") != canary.rollout_id:
            return None  # the latest weight was set by someone else
        try:
            plan = RolloutPlan.from_json(info)
            return RolloutState(
                plan=plan,
                step=int(info["step"]),
                weight=canary.weight,
                production_version=production.version,
                started_at=canary.since,
                step_started_at=change.at,
                baseline=Snapshot.from_json(change.evidence.get("baseline", {})),
            )
        except (KeyError, TypeError, ValueError):
            return None  # not a plan this controller wrote
    return None
