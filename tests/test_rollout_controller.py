"""The controller's state machine on fixed numbers, against a real (file) registry: each
decision lands in the alias document with its evidence, and a new controller resumes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.config import Settings
from core.storage import open_store
from models.random_model import RandomModel
from models.registry import ModelRegistry
from rollout.controller import ADVANCED, PROMOTED, ROLLED_BACK, SETTLING, WAITING, RolloutController
from rollout.decision import ArmStats
from rollout.errors import RolloutError, RolloutSuperseded
from rollout.plan import current_rollout
from rollout.source import MetricsSource, Snapshot
from schemas.manifest import TrainingData


class FixedSource(MetricsSource):
    """Responses the test serves by hand, stamped with the time they were added (a stand-in
    for the online-evaluation buckets in Redis and the API's /metrics)."""

    def __init__(self) -> None:
        self.served: list[tuple[datetime, str, int, int]] = []

    def add(self, variant: str, served: int, converted: int) -> None:
        self.served.append((datetime.now(UTC), variant, served, converted))

    def snapshot(self, model: str, production_version: int, canary_version: int, since: datetime):
        arms = {}
        for variant in ("production", "canary"):
            rows = [(s, c) for at, v, s, c in self.served if v == variant]
            requests = float(sum(s for s, _ in rows))  # cumulative, as the API counts
            cohort = [(s, c) for at, v, s, c in self.served if v == variant and at >= since]
            buckets = ((0.01, requests), (math.inf, requests))
            arms[variant] = ArmStats(
                sum(s for s, _ in cohort), sum(c for _, c in cohort), requests, 0.0, buckets
            )
        return Snapshot(arms)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(open_store(f"file://{tmp_path / 'storage'}"), "reco")
    for seed in (1, 2, 3):
        reg.publish(
            RandomModel([f"i{j}" for j in range(20)], seed=seed),
            training_data=TrainingData(),
            params={},
            metrics={},
        )
    reg.promote(1, reason="baseline", actor="test")
    return reg


@pytest.fixture
def controller_settings() -> Settings:
    return Settings(rollout_min_samples=100, rollout_settle_s=0, rollout_steps="5,50,100")


def test_a_good_canary_walks_every_step_and_is_promoted(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings)
    state = ctl.start(2)
    assert registry.aliases().canary.weight == 5 and state.step == 0

    assert ctl.step().kind == WAITING  # no samples yet
    src.add("production", 500, 100)
    src.add("canary", 99, 25)
    assert ctl.step().kind == WAITING  # the canary is one short
    src.add("canary", 1, 0)
    out = ctl.step()
    assert out.kind == ADVANCED and registry.aliases().canary.weight == 50

    # The next step counts from its own baseline: earlier samples don't count again.
    assert ctl.step().kind == WAITING
    src.add("production", 100, 20)
    src.add("canary", 100, 21)
    out = ctl.step()
    assert out.kind == PROMOTED
    doc = registry.aliases()
    assert doc.production.version == 2 and doc.canary is None
    last = doc.history[-1]
    assert last.action == "promote" and last.actor == "rollout"
    assert last.evidence["canary"]["served"] == 100
    assert last.evidence["production"]["converted"] == 20
    assert last.evidence["test"]["kind"].startswith("one-sided two-proportion")
    steps = [h for h in doc.history if h.action == "canary_weight"]
    assert steps[-1].evidence["decision"]["passed"] is True
    assert steps[-1].evidence["canary"]["served"] == 100  # the first step's numbers


def test_a_bad_canary_is_rolled_back_at_the_first_step(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings)
    ctl.start(3)
    src.add("production", 200, 60)
    src.add("canary", 200, 4)
    out = ctl.step()
    assert out.kind == ROLLED_BACK and out.final
    doc = registry.aliases()
    assert doc.canary is None and doc.production.version == 1
    last = doc.history[-1]
    assert last.action == "canary_clear" and last.actor == "rollout"
    assert last.evidence["decision"]["passed"] is False
    assert last.evidence["canary"]["conversion_rate"] == pytest.approx(0.02)
    assert "conversion" in last.reason


def test_a_restarted_controller_resumes_from_the_registry(registry, controller_settings):
    src = FixedSource()
    src.add("production", 1000, 200)  # traffic before the rollout is not part of it
    RolloutController(registry, src, controller_settings).start(2)
    src.add("production", 150, 30)
    src.add("canary", 150, 31)
    fresh = RolloutController(registry, src, controller_settings)  # "restart"
    state = current_rollout(registry.aliases())
    assert state is not None and state.baseline.arm("production").requests == 1000
    assert fresh.step().kind == ADVANCED
    # Starting the same version again resumes instead of starting over.
    again = RolloutController(registry, src, controller_settings).start(2)
    assert again.weight == 50 and again.step == 1


def test_settle_time_delays_the_decision(registry):
    s = Settings(rollout_min_samples=10, rollout_settle_s=30)
    now = [0.0]
    src = FixedSource()
    ctl = RolloutController(registry, src, s, clock=lambda: now[0])
    ctl.start(2)
    src.add("production", 10, 2)
    src.add("canary", 10, 2)
    assert ctl.step().kind == SETTLING
    now[0] = 31.0
    assert ctl.step().kind == ADVANCED


def test_abort_clears_the_canary_and_a_stale_decision_is_refused(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings)
    ctl.start(2)
    state = current_rollout(registry.aliases())
    out = ctl.abort("operator said so")
    assert out.kind == ROLLED_BACK and registry.aliases().canary is None
    assert registry.aliases().history[-1].reason == "operator said so"
    # A decision computed before the abort must not resurrect the canary.
    from rollout.decision import Verdict

    with pytest.raises(RolloutSuperseded):
        ctl._advance(state, Verdict(True))
    assert registry.aliases().canary is None


def test_start_refuses_what_makes_no_sense(registry, controller_settings):
    ctl = RolloutController(registry, FixedSource(), controller_settings)
    with pytest.raises(RolloutError, match="already production"):
        ctl.start(1)
    with pytest.raises(RolloutError, match="invalid rollout plan"):
        ctl.start(2, steps="50,5")
    ctl.start(2)
    with pytest.raises(RolloutError, match="abort it first"):
        ctl.start(3)
    registry.clear_canary(reason="test")
    registry.set_canary(3, 10, rollout_id="manual", reason="by hand")
    assert ctl.status().kind == "unmanaged"
