"""Keeping the two registry documents in agreement: the rollout document says what a
rollout wants (status, weight), the alias document what serves.

Writers change the rollout document first, then the alias document, then mark the rollout
``applied``. Whatever is found half done -- a controller that died between the writes, an
abort that raced a decision -- is finished from the documents alone on the next poll;
changes made by someone else (a canary cleared or re-weighted by hand, production promoted
meanwhile) are reported so the controller ends the rollout instead of fighting them.
"""

from __future__ import annotations

from collections.abc import Callable

from models import aliases
from models.registry import ModelRegistry
from rollout.errors import RolloutSuperseded
from rollout.plan import ACTOR, EVIDENCE_KEY, RolloutBook, plan_json
from schemas.manifest import AliasDocument
from schemas.rollout import Rollout, RolloutDocument


class DocumentSync:
    def __init__(self, registry: ModelRegistry, book: RolloutBook) -> None:
        self.registry = registry
        self.book = book

    def update(self, r: Rollout, fn: Callable[[Rollout], None]) -> Rollout:
        """Change the current rollout if it is still ``r`` at the same status and step."""

        def apply(d: RolloutDocument) -> None:
            c = d.current
            if c is None or (c.rollout_id, c.status, c.step) != (r.rollout_id, r.status, r.step):
                raise RolloutSuperseded(
                    f"rollout {r.rollout_id} changed meanwhile (aborted or edited)",
                    model=self.registry.name,
                    version=r.version,
                )
            fn(c)

        new = self.book.update(apply).current
        assert new is not None
        return new

    def sync_running(self, r: Rollout, doc: AliasDocument) -> str | None:
        """Make the alias document carry the running rollout's weight; or say why the
        rollout cannot go on (its canary was changed or cleared by someone else)."""
        c = doc.canary
        ours = c is not None and c.rollout_id == r.rollout_id and c.version == r.version
        if doc.production is None or doc.production.version != r.production_version:
            return "production changed outside the rollout"
        if c is not None and not ours:
            return f"canary v{c.version} of another rollout ({c.rollout_id}) is live"
        if c is None and (r.applied or r.step > 0):
            return "canary cleared outside the rollout"
        if ours and c is not None and c.weight == r.weight:
            if not r.applied:
                self.update(r, _mark_applied)
            return None
        if r.applied:
            return "canary weight changed outside the rollout"
        self.apply(r)
        return None

    def apply(self, r: Rollout) -> AliasDocument:
        """Write what ``r`` wants into the alias document (guarded by the canary being
        this rollout's, or absent at its start), then mark it applied."""
        last = r.decisions[-1] if r.decisions else None
        ev = {EVIDENCE_KEY: plan_json(r), "baseline": r.baseline}
        if last is not None:
            ev.update(last.evidence)
        why = {
            "actor": last.actor if last else ACTOR,
            "reason": last.reason if last else "",
            "evidence": ev,
        }
        url = self.registry.store.url

        def fn(d: AliasDocument) -> None:
            c = d.canary
            ours = c is not None and c.rollout_id == r.rollout_id
            if r.status == "running":
                if (c is not None and not ours) or (c is None and r.step > 0):
                    raise RolloutSuperseded(
                        f"the canary of rollout {r.rollout_id} changed meanwhile",
                        model=self.registry.name,
                        version=r.version,
                    )
                aliases.set_canary(d, r.version, r.weight, rollout_id=r.rollout_id, **why)
            elif r.status == "promoted" and ours:
                aliases.promote(d, r.version, url=url, **why)
            elif ours:
                aliases.clear_canary(d, **why)

        new = self.registry.update_aliases(fn)
        try:
            self.update(r, _mark_applied)
        except RolloutSuperseded:
            # Aborted while we wrote: the next step() settles the final state again.
            self.book.update(lambda d: _unsettle(d, r.rollout_id))
        return new

    def settle_final(self, r: Rollout, doc: AliasDocument) -> AliasDocument:
        """A finished rollout: its canary gone (or promoted), then marked applied."""
        c = doc.canary
        if c is not None and c.rollout_id == r.rollout_id:
            return self.apply(r)
        if not r.applied:
            self.update(r, _mark_applied)
        return doc


def _mark_applied(c: Rollout) -> None:
    c.applied = True


def _unsettle(d: RolloutDocument, rollout_id: str) -> None:
    if d.current is not None and d.current.rollout_id == rollout_id and not d.current.active:
        d.current.applied = False
