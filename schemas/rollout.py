"""The canary rollout contract: the rollout document the admin API and the CLI write (a
*requested* rollout, an abort) and the controller executes, plus the serving metric both
sides read.

Registry layout (next to the alias document of :mod:`schemas.manifest`)::

    models/<name>/rollouts.json    RolloutDocument, replaced by compare-and-swap

The document holds the desired state (status, step, canary weight); the alias document
holds what serves. Every writer changes the rollout document first (the CAS is the
serialisation point between the API, the CLI and any controller), then makes the alias
document match, then sets ``applied``. A crash in between leaves ``applied=False``, which
the controller finishes on its next poll -- so it resumes after a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.errors import RolloutConflict
from schemas.manifest import AliasDocument

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


def _now() -> datetime:
    return datetime.now(UTC)


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
    evidence: dict = Field(default_factory=dict, description="The numbers behind it.")


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
    baseline: dict = Field(default_factory=dict, description="Counters when the step began.")
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

    def record(self, action: Action, reason: str, *, actor: str = "rollout", **ev: Any) -> None:
        self.decisions.append(
            RolloutDecision(
                at=_now(),
                action=action,
                step=self.step,
                weight=self.weight,
                actor=actor,
                reason=reason,
                evidence=ev,
            )
        )

    def finish(self, status: Status, action: Action, reason: str, *, actor: str, **ev: Any) -> None:
        self.status = status
        self.applied = False
        self.finished_at = _now()
        self.record(action, reason, actor=actor, **ev)


class RolloutDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str
    revision: int = Field(0, ge=0, description="Bumped on every write.")
    current: Rollout | None = None
    past: list[Rollout] = Field(default_factory=list, description="Finished, oldest first.")

    def request(self, rollout: Rollout) -> None:
        """Make ``rollout`` the current one; refused while another is active."""
        cur = self.current
        if cur is not None and cur.active:
            raise RolloutConflict(
                f"rollout {cur.rollout_id} of v{cur.version} is {cur.status}; abort it first",
                model=self.name,
                rollout_id=cur.rollout_id,
            )
        if cur is not None:
            self.past = [*self.past, cur][-PAST_KEPT:]
        rollout.record("request", rollout.reason, actor=rollout.requested_by)
        self.current = rollout

    def abort(self, *, reason: str, actor: str) -> Rollout:
        """Mark the active rollout aborted (the caller then clears the canary)."""
        cur = self.current
        if cur is None or not cur.active:
            what = "no rollout" if cur is None else f"rollout {cur.rollout_id} is {cur.status}"
            raise RolloutConflict(f"nothing to abort: {what}", model=self.name)
        cur.weight = 0.0
        cur.finish("aborted", "abort", reason or "aborted", actor=actor)
        return cur


class VersionedStore(Protocol):
    """The part of ``core.storage.ObjectStore`` the document needs (schemas import nothing
    of streamrec's, so it is described here rather than imported)."""

    def exists(self, key: str) -> bool: ...
    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...
    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool: ...


def read_rollouts(store: VersionedStore, name: str) -> tuple[RolloutDocument, str | None]:
    """The document and its etag (an empty document and None when there is none yet)."""
    key = rollouts_key(name)
    if not store.exists(key):
        return RolloutDocument(name=name), None
    raw, etag = store.get_with_etag(key)
    return RolloutDocument.model_validate_json(raw), etag


def update_rollouts(
    store: VersionedStore,
    name: str,
    fn: Callable[[RolloutDocument], object],
    *,
    retries: int = 50,
    on_conflict: Callable[[int], None] | None = None,
) -> RolloutDocument:
    """Read-modify-write by compare-and-swap. ``fn`` changes a private copy in place (and
    may raise to refuse); it runs again when writers race, so it must only depend on the
    document it is given."""
    key = rollouts_key(name)
    for attempt in range(1, retries + 1):
        current, etag = read_rollouts(store, name)
        draft = current.model_copy(deep=True)
        fn(draft)
        draft.name, draft.revision = name, current.revision + 1
        if store.put_if_match(key, draft.model_dump_json(indent=2).encode(), etag):
            return draft
        if on_conflict is not None:
            on_conflict(attempt)
    raise RolloutConflict(f"{key}: still contended after {retries} attempts", model=name)


def plan_from_settings(settings: object, version: int, **overrides: Any) -> RolloutPlan:
    """A plan with the ``rollout_*`` settings as defaults and ``overrides`` (None: default)
    on top. Raises pydantic's ValidationError (a ValueError) for a bad plan."""
    g = settings.__getattribute__
    values: dict[str, Any] = {
        "version": version,
        "steps": g("rollout_steps"),
        "min_samples": g("rollout_min_samples"),
        "alpha": g("rollout_alpha"),
        "margin": g("rollout_margin"),
        "max_error_ratio_increase": g("rollout_max_error_ratio_increase"),
        "max_p99_ratio": g("rollout_max_p99_ratio"),
        "p99_slack_ms": g("rollout_p99_slack_ms"),
        "settle_s": g("rollout_settle_s"),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RolloutPlan(**values)


def new_rollout(
    settings: object, model: str, version: int, *, actor: str, reason: str = "", **overrides: Any
) -> Rollout:
    """A requested rollout of ``model`` v``version`` with the settings' defaults under
    ``overrides`` (None: default), as both the API and the CLI request one. Raises pydantic's
    ValidationError (a ValueError) for a bad plan."""
    plan = plan_from_settings(settings, version, **overrides)
    return Rollout(
        **plan.model_dump(),
        rollout_id=uuid.uuid4().hex[:12],
        model=model,
        requested_at=datetime.now(UTC),
        requested_by=actor,
        reason=reason,
    )


def not_startable(doc: AliasDocument, version: int) -> str | None:
    """Why ``version`` cannot start a rollout against the alias document ``doc`` (None: it
    can). Checked when it is requested and again when the controller starts it."""
    if doc.production is None:
        return "no production version to compare with; promote one first"
    if doc.production.version == version:
        return f"version {version} is already production"
    if doc.canary is not None:
        return (
            f"canary v{doc.canary.version} (rollout {doc.canary.rollout_id}) is live; "
            "clear it first"
        )
    return None


def first_error(err: ValueError) -> str:
    """One line for a pydantic ValidationError (or any ValueError)."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        e = errors()[0]
        where = ".".join(str(x) for x in e.get("loc", ()))
        msg = str(e.get("msg", err)).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(err)
