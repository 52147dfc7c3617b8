"""The rollout controller: a state machine over the registry's alias document.

:meth:`RolloutController.step` reads the alias document, and for the rollout it manages
(see :mod:`rollout.plan`) compares canary with production on the current step's cohort: the
responses served since the step began (online-evaluation buckets in Redis, with their
conversions) and the API's request counters since then. It waits until both variants served
``min_samples`` recommendations in the step (plus ``settle_s`` for late conversions), then
either moves to the next weight,
promotes the canary (after the last step), or rolls back (canary cleared: weight 0). Every
write carries the numbers behind it as evidence in the alias history, and is a
compare-and-swap guarded by the canary it decided about, so an abort (or any change) made
meanwhile wins over a stale decision. Nothing is kept only in memory except the moment the
sample threshold was reached, so a restarted controller resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models import aliases
from models.registry import ModelRegistry
from rollout.decision import Thresholds, Verdict, enough_samples, evaluate, parse_steps
from rollout.errors import MetricsUnavailable, RolloutError, RolloutSuperseded
from rollout.plan import ACTOR, EVIDENCE_KEY, RolloutPlan, RolloutState, current_rollout
from rollout.source import CANARY, PRODUCTION, MetricsSource, Snapshot
from schemas.manifest import AliasDocument

log = logging.getLogger(__name__)

# Outcomes of step(); the last three end a rollout.
IDLE, UNMANAGED, WAITING, SETTLING = "idle", "unmanaged", "waiting", "settling"
ADVANCED, PROMOTED, ROLLED_BACK = "advanced", "promoted", "rolled_back"
FINAL = frozenset({IDLE, UNMANAGED, PROMOTED, ROLLED_BACK})


@dataclass(frozen=True)
class Outcome:
    kind: str
    message: str
    state: RolloutState | None = None
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
    settings: object
    clock: Callable[[], float] = time.monotonic
    _ready_at: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.registry.name

    def _error(self, message: str, version: int | None = None) -> RolloutError:
        return RolloutError(message, model=self.model, version=version)

    # --- start / abort ----------------------------------------------------------------
    def start(
        self,
        version: int,
        *,
        steps: str | None = None,
        min_samples: int | None = None,
        alpha: float | None = None,
        settle_s: float | None = None,
    ) -> RolloutState:
        """Put ``version`` on the first step. Starting the rollout already running for the
        same version resumes it instead."""
        s = self.settings
        doc = self.registry.aliases()
        running = current_rollout(doc)
        if running is not None and running.plan.version == version:
            log.info(
                "rollout %s of v%d already running: resuming", running.plan.rollout_id, version
            )
            return running
        if doc.canary is not None:
            raise self._error(
                f"canary v{doc.canary.version} (rollout {doc.canary.rollout_id}) is live; "
                "abort it first (`streamrec rollout abort`)",
                version,
            )
        if doc.production is None:
            raise self._error("no production version to compare with; promote one first", version)
        if doc.production.version == version:
            raise self._error(f"version {version} is already production", version)
        self.registry.manifest(version)  # VersionNotFound / IntegrityError: a clear error
        try:
            plan = RolloutPlan(
                rollout_id=uuid.uuid4().hex[:12],
                version=version,
                steps=tuple(parse_steps(steps or s.rollout_steps)),  # type: ignore[attr-defined]
                thresholds=Thresholds.from_settings(s, min_samples=min_samples, alpha=alpha),
                settle_s=s.rollout_settle_s if settle_s is None else settle_s,  # type: ignore[attr-defined]
            )
        except (TypeError, ValueError) as err:
            raise self._error(f"invalid rollout plan: {err}", version) from None
        now = datetime.now(UTC)
        baseline = self.metrics_source.snapshot(self.model, doc.production.version, version, now)
        weight = plan.evaluated[0]

        def apply(d: AliasDocument) -> None:
            if d.canary is not None:
                raise RolloutSuperseded(
                    f"a canary (v{d.canary.version}) appeared meanwhile", model=self.model
                )
            aliases.set_canary(
                d,
                version,
                weight,
                rollout_id=plan.rollout_id,
                actor=ACTOR,
                reason=f"rollout {plan.rollout_id} started: step 1 at {weight:g}%",
                evidence=self._evidence(plan, 0, baseline),
            )

        new = self.registry.update_aliases(apply)
        state = current_rollout(new)
        assert state is not None
        log.info("rollout %s: v%d at %g%%", plan.rollout_id, version, weight)
        return state

    def abort(self, reason: str = "aborted", *, actor: str = "cli") -> Outcome:
        doc = self.registry.aliases()
        state = current_rollout(doc)
        if doc.canary is None:
            return Outcome(IDLE, "no canary is live", doc=doc)
        evidence = {"decision": "abort"}
        if state is not None:
            evidence[EVIDENCE_KEY] = {**state.plan.to_json(), "step": state.step}
        doc = self.registry.update_aliases(
            lambda d: aliases.clear_canary(d, reason=reason, actor=actor, evidence=evidence)
        )
        return Outcome(ROLLED_BACK, f"canary cleared: {reason}", state=state, doc=doc)

    # --- the state machine ------------------------------------------------------------
    def status(self) -> Outcome:
        """Where the rollout stands and the numbers of its current step (no writes)."""
        doc = self.registry.aliases()
        state = current_rollout(doc)
        if state is None:
            if doc.canary is not None:
                return Outcome(UNMANAGED, f"canary v{doc.canary.version} set by hand", doc=doc)
            return Outcome(IDLE, "no rollout is running", doc=doc)
        stats = self._step_stats(state)
        need = state.plan.thresholds.min_samples
        c, p = stats.arm(CANARY), stats.arm(PRODUCTION)
        return Outcome(
            WAITING,
            f"step {state.step + 1}/{len(state.plan.evaluated)} at {state.weight:g}%: "
            f"served canary {c.served}/{need}, production {p.served}/{need}",
            state=state,
            stats=stats,
            doc=doc,
        )

    def step(self) -> Outcome:
        out = self.status()
        state, stats = out.state, out.stats
        if state is None or stats is None:
            return out
        t = state.plan.thresholds
        canary, production = stats.arm(CANARY), stats.arm(PRODUCTION)
        if not enough_samples(canary, production, t.min_samples):
            return out
        key = (state.plan.rollout_id, state.step)
        ready_at = self._ready_at.setdefault(key, self.clock())
        left = state.plan.settle_s - (self.clock() - ready_at)
        if left > 0:
            return Outcome(SETTLING, f"{out.message}; settling {left:.0f} s", state, stats)
        verdict = evaluate(canary, production, t)
        self._ready_at.pop(key, None)
        if not verdict.passed:
            return self._rollback(state, verdict)
        if state.next_weight is None:
            return self._promote(state, verdict)
        return self._advance(state, verdict)

    def run(
        self,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        poll_s: float | None = None,
    ) -> Outcome:
        """Call :meth:`step` every ``poll_s`` until the rollout ends (or ``should_stop``)."""
        poll = self.settings.rollout_poll_s if poll_s is None else poll_s  # type: ignore[attr-defined]
        while True:
            try:
                out = self.step()
            except MetricsUnavailable as err:  # the API restarting, Redis blinking: next poll
                log.warning("%s; retrying in %g s", err, poll)
                out = Outcome(WAITING, str(err))
            if on_outcome is not None:
                on_outcome(out)
            if out.final or (should_stop is not None and should_stop()):
                return out
            time.sleep(poll)

    # --- decisions --------------------------------------------------------------------
    def _step_stats(self, state: RolloutState) -> Snapshot:
        now = self.metrics_source.snapshot(
            self.model, state.production_version, state.plan.version, state.step_started_at
        )
        return now.minus(state.baseline)

    def _evidence(
        self, plan: RolloutPlan, step: int, baseline: Snapshot, verdict: Verdict | None = None
    ) -> dict:
        ev: dict = {EVIDENCE_KEY: {**plan.to_json(), "step": step}, "baseline": baseline.to_json()}
        if verdict is not None:
            ev["decision"] = {"passed": verdict.passed, "reasons": verdict.reasons}
            ev.update(verdict.evidence)
        return ev

    def _guarded(self, state: RolloutState, fn: Callable[[AliasDocument], None]) -> AliasDocument:
        def apply(d: AliasDocument) -> None:
            c = d.canary
            if (
                c is None
                or c.rollout_id != state.plan.rollout_id
                or c.version != state.plan.version
                or c.weight != state.weight
            ):
                raise RolloutSuperseded(
                    f"rollout {state.plan.rollout_id} changed meanwhile (aborted or edited)",
                    model=self.model,
                    version=state.plan.version,
                )
            fn(d)

        return self.registry.update_aliases(apply)

    def _advance(self, state: RolloutState, verdict: Verdict) -> Outcome:
        weight = state.next_weight
        assert weight is not None
        # The new step counts from now: the snapshot taken now is its baseline.
        baseline = self.metrics_source.snapshot(
            self.model, state.production_version, state.plan.version, datetime.now(UTC)
        )
        reason = f"step {state.step + 1} passed at {state.weight:g}%: now {weight:g}%"
        ev = self._evidence(state.plan, state.step + 1, baseline, verdict)
        doc = self._guarded(
            state,
            lambda d: aliases.set_canary(
                d,
                state.plan.version,
                weight,
                rollout_id=state.plan.rollout_id,
                actor=ACTOR,
                reason=reason,
                evidence=ev,
            ),
        )
        log.info("rollout %s: %s", state.plan.rollout_id, reason)
        return Outcome(ADVANCED, reason, state, verdict=verdict, doc=doc)

    def _promote(self, state: RolloutState, verdict: Verdict) -> Outcome:
        reason = (
            f"rollout {state.plan.rollout_id} passed every step: v{state.plan.version} promoted"
        )
        ev = self._evidence(state.plan, state.step, state.baseline, verdict)
        url = self.registry.store.url
        doc = self._guarded(
            state,
            lambda d: aliases.promote(
                d, state.plan.version, url=url, actor=ACTOR, reason=reason, evidence=ev
            ),
        )
        log.info(reason)
        return Outcome(PROMOTED, reason, state, verdict=verdict, doc=doc)

    def _rollback(self, state: RolloutState, verdict: Verdict) -> Outcome:
        reason = f"rollout {state.plan.rollout_id} rolled back at {state.weight:g}%: " + "; ".join(
            verdict.reasons
        )
        ev = self._evidence(state.plan, state.step, state.baseline, verdict)
        ev["decision"]["action"] = "rollback: canary weight 0, alias cleared"
        doc = self._guarded(
            state, lambda d: aliases.clear_canary(d, actor=ACTOR, reason=reason, evidence=ev)
        )
        log.warning(reason)
        return Outcome(ROLLED_BACK, reason, state, verdict=verdict, doc=doc)
