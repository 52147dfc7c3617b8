"""The rollout controller: executes the rollout document (:mod:`schemas.rollout`).

The admin API or the CLI writes a *requested* rollout; :meth:`RolloutController.step`
reads the rollout document and the alias document and moves the rollout on:

- ``requested``: check it still makes sense, set the first canary weight;
- ``running``: make the alias document carry the wanted weight, then compare canary with
  production on the current step's cohort -- the responses served since the step began
  (online-evaluation buckets in Redis, with their conversions) and the API's counters of
  the users assigned to each variant since then. Once both variants served
  ``min_samples`` (plus ``settle_s`` for late conversions) it advances, promotes (after
  the last step) or rolls back (weight 0, canary cleared);
- finished (promoted, rolled back, aborted, failed): make sure the alias document agrees.

Each transition is written to the rollout document first (compare-and-swap guarded by the
status and step it decided about, so an abort made meanwhile wins over a stale decision),
then to the alias document, whose history gets the numbers behind it (:mod:`rollout.sync`
finishes whatever a crash left half done). Nothing is kept only
in memory except the moment the sample threshold was reached, so a restarted controller
resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.config_rollout import RolloutSettings
from models import rollouts
from models.registry import ModelRegistry
from models.rollouts import first_error, new_rollout, not_startable
from rollout.decision import Verdict, enough_samples, evaluate
from rollout.errors import MetricsUnavailable, RolloutError, RolloutSuperseded
from rollout.plan import ACTOR, RolloutBook, backoff, thresholds
from rollout.source import CANARY, PRODUCTION, MetricsSource, Snapshot
from rollout.sync import DocumentSync
from schemas.errors import RolloutConflict
from schemas.manifest import AliasDocument
from schemas.rollout import Action, Rollout, Status

log = logging.getLogger(__name__)

# Outcomes of step(); FINAL ones end a rollout.
IDLE, UNMANAGED, REQUESTED, WAITING, SETTLING = (
    "idle",
    "unmanaged",
    "requested",
    "waiting",
    "settling",
)
STARTED, ADVANCED = "started", "advanced"
PROMOTED, ROLLED_BACK, ABORTED, FAILED = "promoted", "rolled_back", "aborted", "failed"
FINAL = frozenset({IDLE, UNMANAGED, PROMOTED, ROLLED_BACK, ABORTED, FAILED})


@dataclass(frozen=True)
class Outcome:
    kind: str
    message: str
    state: Rollout | None = None
    stats: Snapshot | None = None  # the numbers of the current step
    verdict: Verdict | None = None
    doc: AliasDocument | None = None

    @property
    def final(self) -> bool:
        return self.kind in FINAL


@dataclass
class RolloutController:
    registry: ModelRegistry
    metrics_source: MetricsSource
    settings: RolloutSettings
    clock: Callable[[], float] = time.monotonic
    _ready_at: dict[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.book = RolloutBook(self.registry)
        self.sync = DocumentSync(self.registry, self.book)

    @property
    def model(self) -> str:
        return self.registry.name

    def _error(self, message: str, version: int | None = None) -> RolloutError:
        return RolloutError(message, model=self.model, version=version)

    # --- request / abort (what the admin API does too) -------------------------------
    def request(
        self, version: int, *, actor: str = "cli", reason: str = "", **plan: object
    ) -> Rollout:
        """Write a requested rollout of ``version`` (``plan``: steps, min_samples, alpha,
        settle_s...; None keeps the setting). Requesting the version already rolling out
        returns that rollout instead, so re-running ``start`` resumes."""
        current = self.book.read().current
        if current is not None and current.active and current.version == version:
            log.info(
                "rollout %s of v%d is %s: resuming", current.rollout_id, version, current.status
            )
            return current
        self.registry.manifest(version)  # VersionNotFound / IntegrityError: a clear error
        problem = not_startable(self.registry.aliases(), version)
        if problem is not None:
            raise self._error(problem, version)
        try:
            r = new_rollout(self.settings, self.model, version, actor=actor, reason=reason, **plan)
        except ValueError as err:
            raise self._error(f"invalid rollout plan: {first_error(err)}", version) from None
        self.book.update(lambda d: rollouts.request(d, r.model_copy(deep=True)))
        log.info("rollout %s of v%d requested by %s", r.rollout_id, version, actor)
        return r

    def abort(self, reason: str = "aborted", *, actor: str = "cli") -> Outcome:
        """Mark the active rollout aborted and clear its canary (weight 0) right away."""
        store = self.registry.store
        try:
            r = rollouts.abort_current(
                store, self.model, reason=reason, actor=actor, on_conflict=backoff
            )
        except RolloutConflict as err:
            return Outcome(IDLE, str(err), state=self.book.read().current)
        out = self._settle_final(r, self.registry.aliases())
        return Outcome(ABORTED, f"rollout {r.rollout_id} aborted: {reason}", r, doc=out.doc)

    # --- the state machine ------------------------------------------------------------
    def status(self) -> Outcome:
        """Where the rollout stands and the numbers of its current step (no writes)."""
        r, doc = self.book.read().current, self.registry.aliases()
        return self._status(r, doc)

    def _status(self, r: Rollout | None, doc: AliasDocument) -> Outcome:
        if r is None or (not r.active and r.applied):
            if doc.canary is not None and (r is None or doc.canary.rollout_id != r.rollout_id):
                return Outcome(UNMANAGED, f"canary v{doc.canary.version} set by hand", r, doc=doc)
            if r is None:
                return Outcome(IDLE, "no rollout has run", doc=doc)
            last = r.decisions[-1].reason if r.decisions else ""
            return Outcome(
                _FINAL_KIND[r.status], f"rollout {r.rollout_id} {r.status}: {last}", r, doc=doc
            )
        if r.status == "requested":
            return Outcome(
                REQUESTED, f"rollout {r.rollout_id} of v{r.version} requested", r, doc=doc
            )
        if not r.active:
            return Outcome(_FINAL_KIND[r.status], f"rollout {r.rollout_id} {r.status}", r, doc=doc)
        where = f"step {r.step + 1}/{len(r.evaluated)} at {r.weight:g}%"
        try:
            stats = self._step_stats(r)
        except MetricsUnavailable as err:  # the state is known; only the numbers are not
            return Outcome(WAITING, f"{where}: numbers unavailable ({err})", r, doc=doc)
        need = r.min_samples
        c, p = stats.arm(CANARY), stats.arm(PRODUCTION)
        return Outcome(
            WAITING,
            f"{where}: served canary {c.served}/{need}, production {p.served}/{need}",
            state=r,
            stats=stats,
            doc=doc,
        )

    def step(self) -> Outcome:
        r, doc = self.book.read().current, self.registry.aliases()
        if r is None:
            return self._status(r, doc)
        if not r.active:
            return self._settle_final(r, doc)
        if r.status == "requested":
            return self._begin(r, doc)
        problem = self.sync.sync_running(r, doc)
        if problem is not None:
            return self._finish(r, "aborted", "abort", problem)
        out = self._status(r, doc)
        stats = out.stats
        if stats is None:
            return out
        t = thresholds(r)
        canary, production = stats.arm(CANARY), stats.arm(PRODUCTION)
        if not enough_samples(canary, production, t.min_samples):
            return out
        key = (r.rollout_id, r.step)
        ready_at = self._ready_at.setdefault(key, self.clock())
        left = r.settle_s - (self.clock() - ready_at)
        if left > 0:
            return Outcome(SETTLING, f"{out.message}; settling {left:.0f} s", r, stats)
        verdict = evaluate(canary, production, t)
        self._ready_at.pop(key, None)
        if not verdict.passed:
            reason = f"rolled back at {r.weight:g}%: " + "; ".join(verdict.reasons)
            return self._finish(r, "rolled_back", "rollback", reason, verdict)
        if r.step + 1 >= len(r.evaluated):
            reason = f"passed every step: v{r.version} promoted"
            return self._finish(r, "promoted", "promote", reason, verdict)
        return self._advance(r, verdict)

    def run(
        self,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        poll_s: float | None = None,
        forever: bool = False,
    ) -> Outcome:
        """Call :meth:`step` every ``poll_s`` until the rollout ends (or ``should_stop``);
        with ``forever``, keep picking up requested rollouts until ``should_stop``."""
        poll = self.settings.poll_s if poll_s is None else poll_s
        while True:
            try:
                out = self.step()
            except (MetricsUnavailable, RolloutSuperseded) as err:
                # The API restarting, Redis blinking, an abort racing a decision: next poll.
                log.warning("%s; retrying in %g s", err, poll)
                out = Outcome(WAITING, str(err))
            if on_outcome is not None:
                on_outcome(out)
            if (out.final and not forever) or (should_stop is not None and should_stop()):
                return out
            time.sleep(poll)

    # --- transitions --------------------------------------------------------------------
    def _step_stats(self, r: Rollout) -> Snapshot:
        assert r.step_started_at is not None and r.production_version is not None
        now = self.metrics_source.snapshot(
            self.model, r.production_version, r.version, r.step_started_at
        )
        return now.minus(Snapshot.from_json(r.baseline))

    def _snapshot(self, production: int, canary: int) -> Snapshot:
        return self.metrics_source.snapshot(self.model, production, canary, datetime.now(UTC))

    def _begin(self, r: Rollout, doc: AliasDocument) -> Outcome:
        problem = not_startable(doc, r.version)
        if problem is not None and not (doc.canary and doc.canary.rollout_id == r.rollout_id):
            return self._finish(r, "failed", "fail", f"cannot start: {problem}")
        production = doc.production.version if doc.production else None
        assert production is not None
        baseline = self._snapshot(production, r.version)

        def start(c: Rollout) -> None:
            c.status, c.step, c.weight, c.applied = "running", 0, c.evaluated[0], False
            c.production_version = production
            c.started_at = c.step_started_at = datetime.now(UTC)
            c.baseline = baseline.to_json()
            rollouts.record(c, "start", f"step 1 at {c.weight:g}%")

        r = self.sync.update(r, start)
        self.sync.sync_running(r, self.registry.aliases())
        log.info("rollout %s: v%d at %g%%", r.rollout_id, r.version, r.weight)
        return Outcome(STARTED, f"rollout {r.rollout_id} started: v{r.version} at {r.weight:g}%", r)

    def _advance(self, r: Rollout, verdict: Verdict) -> Outcome:
        assert r.production_version is not None
        # The new step counts from now: the snapshot taken now is its baseline.
        baseline = self._snapshot(r.production_version, r.version)
        before = r.weight

        def advance(c: Rollout) -> None:
            c.step += 1
            c.weight, c.applied = c.evaluated[c.step], False
            c.step_started_at, c.baseline = datetime.now(UTC), baseline.to_json()
            reason = f"step {c.step} passed at {before:g}%: now {c.weight:g}%"
            rollouts.record(c, "advance", reason, **_evidence(verdict))

        r = self.sync.update(r, advance)
        doc = self.sync.apply(r)
        log.info("rollout %s: %s", r.rollout_id, r.decisions[-1].reason)
        return Outcome(ADVANCED, r.decisions[-1].reason, r, verdict=verdict, doc=doc)

    def _finish(
        self,
        r: Rollout,
        status: Status,
        action: Action,
        reason: str,
        verdict: Verdict | None = None,
    ) -> Outcome:
        reason = f"rollout {r.rollout_id} {reason}"
        ev = _evidence(verdict) if verdict else {}

        def finish(c: Rollout) -> None:
            rollouts.finish(c, status, action, reason, actor=ACTOR, **ev)

        r = self.sync.update(r, finish)
        (log.info if status == "promoted" else log.warning)(reason)
        out = self._settle_final(r, self.registry.aliases(), verdict)
        return Outcome(_FINAL_KIND[status], reason, r, verdict=verdict, doc=out.doc)

    def _settle_final(
        self, r: Rollout, doc: AliasDocument, verdict: Verdict | None = None
    ) -> Outcome:
        doc = self.sync.settle_final(r, doc)
        last = r.decisions[-1].reason if r.decisions else r.status
        return Outcome(_FINAL_KIND[r.status], last, r, verdict=verdict, doc=doc)


_FINAL_KIND = {
    "promoted": PROMOTED,
    "rolled_back": ROLLED_BACK,
    "aborted": ABORTED,
    "failed": FAILED,
}


def _evidence(verdict: Verdict) -> dict:
    return {"decision": {"passed": verdict.passed, "reasons": verdict.reasons}, **verdict.evidence}
