"""The rollout document (:mod:`schemas.rollout`) read and changed in the registry's store,
beside the alias document and in the same way: changes are functions on the document that
:func:`update` runs inside a compare-and-swap loop, so they may run more than once and must
only depend on the document they are given.

The admin API and the rollout controller both request and abort through here, so the two
cannot drift apart (an abort marks the rollout first, then clears its canary, then marks it
applied; a crash between those is finished by whoever comes next).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.config_rollout import RolloutSettings
from core.storage import ObjectStore
from models import aliases
from models.registry import ModelRegistry
from schemas.errors import RolloutConflict
from schemas.manifest import AliasDocument
from schemas.rollout import (
    PAST_KEPT,
    Action,
    Rollout,
    RolloutDecision,
    RolloutDocument,
    RolloutPlan,
    Status,
    rollouts_key,
)


def _now() -> datetime:
    return datetime.now(UTC)


# --- changes of one rollout / of the document (pure, may run several times) -------------
def record(r: Rollout, action: Action, reason: str, *, actor: str = "rollout", **ev: Any) -> None:
    r.decisions.append(
        RolloutDecision(
            at=_now(),
            action=action,
            step=r.step,
            weight=r.weight,
            actor=actor,
            reason=reason,
            evidence=ev,
        )
    )


def finish(
    r: Rollout, status: Status, action: Action, reason: str, *, actor: str, **ev: Any
) -> None:
    r.status = status
    r.applied = False
    r.finished_at = _now()
    record(r, action, reason, actor=actor, **ev)


def request(doc: RolloutDocument, rollout: Rollout) -> None:
    """Make ``rollout`` the current one; refused while another is active."""
    cur = doc.current
    if cur is not None and cur.active:
        raise RolloutConflict(
            f"rollout {cur.rollout_id} of v{cur.version} is {cur.status}; abort it first",
            model=doc.name,
            rollout_id=cur.rollout_id,
        )
    if cur is not None:
        doc.past = [*doc.past, cur][-PAST_KEPT:]
    record(rollout, "request", rollout.reason, actor=rollout.requested_by)
    doc.current = rollout


def abort(doc: RolloutDocument, *, reason: str, actor: str) -> Rollout:
    """Mark the active rollout aborted (the caller then clears the canary)."""
    cur = doc.current
    if cur is None or not cur.active:
        what = "no rollout" if cur is None else f"rollout {cur.rollout_id} is {cur.status}"
        raise RolloutConflict(f"nothing to abort: {what}", model=doc.name)
    cur.weight = 0.0
    finish(cur, "aborted", "abort", reason or "aborted", actor=actor)
    return cur


# --- the document in the store -----------------------------------------------------------
def read(store: ObjectStore, name: str) -> tuple[RolloutDocument, str | None]:
    """The document and its etag (an empty document and None when there is none yet)."""
    key = rollouts_key(name)
    if not store.exists(key):
        return RolloutDocument(name=name), None
    raw, etag = store.get_with_etag(key)
    return RolloutDocument.model_validate_json(raw), etag


def update(
    store: ObjectStore,
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
        current, etag = read(store, name)
        draft = current.model_copy(deep=True)
        fn(draft)
        draft.name, draft.revision = name, current.revision + 1
        if store.put_if_match(key, draft.model_dump_json(indent=2).encode(), etag):
            return draft
        if on_conflict is not None:
            on_conflict(attempt)
    raise RolloutConflict(f"{key}: still contended after {retries} attempts", model=name)


def abort_current(
    store: ObjectStore,
    name: str,
    *,
    reason: str,
    actor: str,
    on_conflict: Callable[[int], None] | None = None,
) -> Rollout:
    """Mark the active rollout aborted and return it -- or the last one, finished but not yet
    applied (an abort whose canary clearing did not happen), so the caller finishes it.
    Raises RolloutConflict when there is nothing to abort."""
    try:
        doc = update(
            store, name, lambda d: abort(d, reason=reason, actor=actor), on_conflict=on_conflict
        )
    except RolloutConflict:
        cur = read(store, name)[0].current
        if cur is None or cur.active or cur.applied:
            raise
        return cur
    assert doc.current is not None  # abort() refuses a document without one
    return doc.current


def settle_abort(registry: ModelRegistry, r: Rollout, evidence: dict[str, Any]) -> Rollout:
    """Clear the canary of the aborted rollout ``r`` (if it is still its) and mark ``r``
    applied: what makes an abort take effect with no controller running."""
    last = r.decisions[-1]

    def clear(d: AliasDocument) -> None:
        if d.canary is not None and d.canary.rollout_id == r.rollout_id:
            aliases.clear_canary(d, actor=last.actor, reason=last.reason, evidence=evidence)

    registry.update_aliases(clear)

    def applied(d: RolloutDocument) -> None:
        if d.current is not None and d.current.rollout_id == r.rollout_id:
            d.current.applied = True

    return update(registry.store, registry.name, applied).current or r


# --- building a request ------------------------------------------------------------------
def plan_from_settings(rollout: RolloutSettings, version: int, **overrides: Any) -> RolloutPlan:
    """A plan with the rollout section as defaults and ``overrides`` (None: default)
    on top. Raises pydantic's ValidationError (a ValueError) for a bad plan."""
    values: dict[str, Any] = {
        "version": version,
        "steps": rollout.steps,
        "min_samples": rollout.min_samples,
        "alpha": rollout.alpha,
        "margin": rollout.margin,
        "max_error_ratio_increase": rollout.max_error_ratio_increase,
        "max_p99_ratio": rollout.max_p99_ratio,
        "p99_slack_ms": rollout.p99_slack_ms,
        "settle_s": rollout.settle_s,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RolloutPlan(**values)


def new_rollout(
    rollout: RolloutSettings,
    model: str,
    version: int,
    *,
    actor: str,
    reason: str = "",
    **overrides: Any,
) -> Rollout:
    """A requested rollout of ``model`` v``version`` with the settings' defaults under
    ``overrides`` (None: default), as both the API and the CLI request one. Raises pydantic's
    ValidationError (a ValueError) for a bad plan."""
    plan = plan_from_settings(rollout, version, **overrides)
    return Rollout(
        **plan.model_dump(),
        rollout_id=uuid.uuid4().hex[:12],
        model=model,
        requested_at=_now(),
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
