"""The canary rollout contract: the rollout document the admin API and the CLI write (a
*requested* rollout, an abort) and the controller executes, plus the serving metric both
sides read.

Registry layout (next to the alias document of :mod:`schemas.manifest`)::

    models/<name>/rollouts.json    RolloutDocument, replaced by compare-and-swap

The document holds the desired state (status, step, canary weight); the alias document
holds what serves. Every writer changes the rollout document first (the CAS is the
serialisation point between the API, the CLI and any controller), then makes the alias
document match, then sets ``applied``. A crash in between leaves ``applied=False``, which
the controller finishes on its next poll -- so it resumes after a restart. Reading and
changing the document (the compare-and-swap, request, abort) is :mod:`models.rollouts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROLLOUTS_FILE = "rollouts.json"
FORMAT_VERSION = 1
PAST_KEPT = 20  # finished rollouts kept in the document (the alias history keeps all)

Status = Literal["requested", "running", "promoted", "rolled_back", "aborted", "failed"]
ACTIVE: frozenset[str] = frozenset({"requested", "running"})
Action = Literal["request", "start", "advance", "promote", "rollback", "abort", "fail"]

# --- the serving metric the controller judges on ------------------------------------------
# Labelled by the variant the user was *assigned* (production | canary | none), so a canary
# that times out or errors is charged to the canary, not to "fallback".
RECOMMEND_METRIC = "streamrec_serving_recommend_seconds"
ANSWERED_MODEL = "model"  # the assigned version answered
ANSWERED_PRODUCTION = "production"  # the canary could not answer; production did
ANSWERED_FALLBACK = "fallback"  # popularity answered (see the reason label)
NO_REASON = "none"
# Fallback reasons that are the assigned model's fault. Outages of Redis or the registry,
# and users the model does not know, hit both variants alike and are not counted.
MODEL_FAULT_REASONS = frozenset({"timeout", "model_error", "model_unavailable", "model_loading"})


def rollouts_key(name: str) -> str:
    return f"models/{name}/{ROLLOUTS_FILE}"


def parse_steps(text: str | Sequence[float]) -> list[float]:
    """``"5,50,100"`` -> ``[5.0, 50.0, 100.0]``: increasing percentages within (0, 100]."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    try:
        steps = [float(str(x).strip()) for x in raw if str(x).strip()]
    except ValueError:
        raise ValueError(f"steps must be comma-separated percentages, got {text!r}") from None
    if not steps:
        raise ValueError("steps must name at least one weight")
    if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"steps must increase strictly within (0, 100], got {text!r}")
    if steps[0] >= 100:
        raise ValueError("the first step must be below 100 (reaching 100 is the promotion)")
    return steps


class RolloutDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: datetime
    action: Action
    step: int | None = None
    weight: float | None = None
    actor: str = "rollout"
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict, description="The numbers behind it.")


class RolloutPlan(BaseModel):
    """What a rollout request asks for: validated the same way by the API and the CLI."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    steps: list[float] = Field(description="Canary weights in percent; 100 promotes.")
    min_samples: int = Field(ge=1, description="Recommendations per variant per step.")
    alpha: float = Field(gt=0, lt=1, description="Significance of the conversion test.")
    margin: float = Field(0.0, ge=0, lt=1)
    max_error_ratio_increase: float = Field(0.01, ge=0, le=1)
    max_p99_ratio: float = Field(1.5, ge=1)
    p99_slack_ms: float = Field(10.0, ge=0)
    settle_s: float = Field(0.0, ge=0)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> list[float]:
        return parse_steps(v)

    @property
    def evaluated(self) -> list[float]:
        """Weights at which canary and production are compared; passing the last promotes."""
        return [s for s in self.steps if s < 100]


class Rollout(RolloutPlan):
    rollout_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    model: str
    status: Status = "requested"
    step: int = Field(0, ge=0, description="Index into the evaluated steps.")
    weight: float = Field(0.0, ge=0, le=100, description="Canary weight wanted now.")
    applied: bool = Field(False, description="The alias document reflects status/weight.")
    production_version: int | None = None
    requested_at: datetime
    requested_by: str
    reason: str = ""
    started_at: datetime | None = None
    step_started_at: datetime | None = None
    baseline: dict[str, Any] = Field(
        default_factory=dict, description="Counters when the step began."
    )
    finished_at: datetime | None = None
    decisions: list[RolloutDecision] = Field(default_factory=list)

    @model_validator(mode="after")
    def _step_in_range(self) -> Rollout:
        if self.step >= len(self.evaluated):
            raise ValueError(f"step {self.step} beyond the {len(self.evaluated)} steps")
        return self

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class RolloutDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str
    revision: int = Field(0, ge=0, description="Bumped on every write.")
    current: Rollout | None = None
    past: list[Rollout] = Field(default_factory=list, description="Finished, oldest first.")
