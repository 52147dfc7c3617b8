"""Alias changes as pure functions on an :class:`AliasDocument` (the registry applies them
inside its compare-and-swap loop, so they may run more than once and must only depend on
the document they are given). Each appends its entry to the document's history."""

from __future__ import annotations

from datetime import UTC, datetime

from models.errors import AliasError
from schemas.manifest import AliasChange, AliasDocument, CanaryAlias, ProductionAlias


def _now() -> datetime:
    return datetime.now(UTC)


def production_stack(doc: AliasDocument) -> list[int]:
    """Production versions in the order they were put in place, rollbacks popping them, so
    the last element is the current production and the one before it the rollback target."""
    stack: list[int] = []
    for change in doc.history:
        if change.action == "promote" and change.version is not None:
            stack.append(change.version)
        elif change.action == "rollback" and stack:
            stack.pop()
            if change.version is not None and (not stack or stack[-1] != change.version):
                stack.append(change.version)  # a rollback to a version no longer on the stack
    return stack


def promote(doc: AliasDocument, version: int, *, url: str, **why: object) -> None:
    """``version`` becomes production; a canary of that version is cleared."""
    previous = doc.production.version if doc.production else None
    if previous == version:
        raise AliasError(f"version {version} is already production", name=doc.name, url=url)
    doc.production = ProductionAlias(version=version, since=_now())
    if doc.canary and doc.canary.version == version:
        doc.canary = None
    doc.history.append(
        AliasChange(at=_now(), action="promote", version=version, previous_version=previous, **why)
    )


def rollback(doc: AliasDocument, *, url: str, **why: object) -> None:
    stack = production_stack(doc)
    if len(stack) < 2:
        raise AliasError(
            "nothing to roll back to: production has no earlier version", name=doc.name, url=url
        )
    current, target = stack[-1], stack[-2]
    doc.production = ProductionAlias(version=target, since=_now())
    doc.history.append(
        AliasChange(at=_now(), action="rollback", version=target, previous_version=current, **why)
    )


def set_canary(
    doc: AliasDocument, version: int, weight: float, *, rollout_id: str, **why: object
) -> None:
    """A new canary, or a new weight for the same version and rollout."""
    same = bool(
        doc.canary and doc.canary.version == version and doc.canary.rollout_id == rollout_id
    )
    since = doc.canary.since if same and doc.canary else _now()
    previous = doc.canary.version if doc.canary else None
    doc.canary = CanaryAlias(version=version, weight=weight, rollout_id=rollout_id, since=since)
    doc.history.append(
        AliasChange(
            at=_now(),
            action="canary_weight" if same else "canary",
            version=version,
            previous_version=previous,
            weight=weight,
            **why,
        )
    )


def clear_canary(doc: AliasDocument, **why: object) -> None:
    if doc.canary is None:
        return
    doc.history.append(
        AliasChange(
            at=_now(),
            action="canary_clear",
            version=doc.canary.version,
            weight=doc.canary.weight,
            **why,
        )
    )
    doc.canary = None


def record_publish(doc: AliasDocument, version: int, *, actor: str, reason: str) -> None:
    doc.history.append(
        AliasChange(at=_now(), action="publish", version=version, actor=actor, reason=reason)
    )
