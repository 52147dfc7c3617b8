"""The controller's own Prometheus metrics (``streamrec rollout`` serves them on
``rollout_metrics_port``): where the rollout stands and the numbers of its current step.
The impression / conversion counters themselves come from the stream worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from rollout.controller import Outcome
from rollout.source import CANARY, PRODUCTION


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.weight = Gauge(
            "streamrec_rollout_canary_weight_percent",
            "Canary weight the controller set (0: no rollout).",
            ["model"],
            registry=r,
        )
        self.step = Gauge(
            "streamrec_rollout_step", "1-based step of the running rollout.", ["model"], registry=r
        )
        self.served = Gauge(
            "streamrec_rollout_step_served",
            "Recommendations served in the current step, per variant.",
            ["model", "variant"],
            registry=r,
        )
        self.conversion = Gauge(
            "streamrec_rollout_step_conversion_ratio",
            "Conversion rate in the current step, per variant.",
            ["model", "variant"],
            registry=r,
        )
        self.decisions = Counter(
            "streamrec_rollout_decisions",
            "Decisions taken: advanced, promoted, rolled_back.",
            ["model", "decision"],
            registry=r,
        )

    def observe(self, model: str, out: Outcome) -> None:
        if out.kind in ("advanced", "promoted", "rolled_back"):
            self.decisions.labels(model, out.kind).inc()
        state = out.state
        if state is None or out.final:
            self.weight.labels(model).set(0)
            self.step.labels(model).set(0)
            return
        self.weight.labels(model).set(state.weight)
        self.step.labels(model).set(state.step + 1)
        if out.stats is not None:
            for variant in (PRODUCTION, CANARY):
                arm = out.stats.arm(variant)
                self.served.labels(model, variant).set(arm.served)
                self.conversion.labels(model, variant).set(arm.conversion_rate)
