"""The controller's state machine on fixed numbers, against a real (file) registry: a
requested rollout is started, each decision lands in the rollout document and in the alias
history with its evidence, a new controller resumes, and changes made meanwhile win."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from core.storage import open_store
from models.random_model import RandomModel
from models.registry import ModelRegistry
from rollout.controller import (
    ABORTED,
    ADVANCED,
    FAILED,
    PROMOTED,
    ROLLED_BACK,
    SETTLING,
    STARTED,
    WAITING,
    RolloutController,
)
from rollout.decision import Verdict
from rollout.errors import RolloutError, RolloutSuperseded
from rollout.plan import RolloutBook
from rollout.source import Snapshot
from schemas.errors import RolloutConflict
from schemas.manifest import TrainingData
from tests.support.rollout import FixedSource


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
    return Settings().with_sections(
        rollout={"min_samples": 100, "settle_s": 0, "steps": "5,50,100"}
    )


def _start(ctl: RolloutController, version: int, **plan):
    r = ctl.request(version, **plan)
    out = ctl.step()
    assert out.kind == STARTED, out.message
    return r


def test_a_good_canary_walks_every_step_and_is_promoted(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings.rollout)
    r = ctl.request(2, actor="test")
    assert r.status == "requested" and registry.aliases().canary is None  # not yet
    assert ctl.step().kind == STARTED
    assert registry.aliases().canary.weight == 5
    assert RolloutBook(registry).read().current.status == "running"

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
    assert out.kind == PROMOTED and out.final
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
    # The rollout document tells the same story.
    r = RolloutBook(registry).read().current
    assert r.status == "promoted" and r.applied and r.finished_at is not None
    assert [d.action for d in r.decisions] == ["request", "start", "advance", "promote"]
    assert r.decisions[-1].evidence["canary"]["served"] == 100
    assert r.requested_by == "test"


def test_a_bad_canary_is_rolled_back_at_the_first_step(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings.rollout)
    _start(ctl, 3)
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
    assert RolloutBook(registry).read().current.status == "rolled_back"
    assert ctl.step().kind == ROLLED_BACK  # stays finished, nothing more written
    assert registry.aliases().revision == doc.revision


def test_a_restarted_controller_resumes_from_the_registry(registry, controller_settings):
    src = FixedSource()
    src.add("production", 1000, 200)  # traffic before the rollout is not part of it
    _start(RolloutController(registry, src, controller_settings.rollout), 2)
    src.add("production", 150, 30)
    src.add("canary", 150, 31)
    fresh = RolloutController(registry, src, controller_settings.rollout)  # "restart"
    r = RolloutBook(registry).read().current
    assert Snapshot.from_json(r.baseline).arm("production").requests == 1000
    assert fresh.step().kind == ADVANCED
    # Starting the same version again resumes instead of starting over.
    again = RolloutController(registry, src, controller_settings.rollout).request(2)
    assert again.weight == 50 and again.step == 1 and again.rollout_id == r.rollout_id


def test_a_crash_between_the_two_documents_is_finished_on_resume(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings.rollout)
    _start(ctl, 2)

    # As if the controller died after writing the next step but before the alias write.
    def half_advance(d):
        d.current.step, d.current.weight, d.current.applied = 1, 50.0, False

    RolloutBook(registry).update(half_advance)
    assert registry.aliases().canary.weight == 5
    assert RolloutController(registry, src, controller_settings.rollout).step().kind == WAITING
    assert registry.aliases().canary.weight == 50
    assert RolloutBook(registry).read().current.applied


def test_settle_time_delays_the_decision(registry):
    s = Settings().with_sections(rollout={"min_samples": 10, "settle_s": 30})
    now = [0.0]
    src = FixedSource()
    ctl = RolloutController(registry, src, s.rollout, clock=lambda: now[0])
    _start(ctl, 2)
    src.add("production", 10, 2)
    src.add("canary", 10, 2)
    assert ctl.step().kind == SETTLING
    now[0] = 31.0
    assert ctl.step().kind == ADVANCED


def test_abort_clears_the_canary_and_a_stale_decision_is_refused(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings.rollout)
    _start(ctl, 2)
    running = RolloutBook(registry).read().current
    out = ctl.abort("operator said so")
    assert out.kind == ABORTED and registry.aliases().canary is None
    last = registry.aliases().history[-1]
    assert last.reason == "operator said so" and last.actor == "cli"
    assert RolloutBook(registry).read().current.status == "aborted"
    # A decision computed before the abort must not resurrect the canary.
    with pytest.raises(RolloutSuperseded):
        ctl._advance(running, Verdict(True))
    assert registry.aliases().canary is None
    assert ctl.abort("again").kind == "idle"  # nothing left to abort


def test_a_canary_changed_by_hand_ends_the_rollout(registry, controller_settings):
    src = FixedSource()
    ctl = RolloutController(registry, src, controller_settings.rollout)
    r = _start(ctl, 2)
    registry.set_canary(2, 80, rollout_id=r.rollout_id, reason="by hand")
    out = ctl.step()
    assert out.kind == ABORTED and "outside the rollout" in out.message
    assert registry.aliases().canary is None


def test_start_refuses_what_makes_no_sense(registry, controller_settings):
    ctl = RolloutController(registry, FixedSource(), controller_settings.rollout)
    with pytest.raises(RolloutError, match="already production"):
        ctl.request(1)
    with pytest.raises(RolloutError, match="invalid rollout plan"):
        ctl.request(2, steps="50,5")
    ctl.request(2)
    with pytest.raises(RolloutConflict, match="abort it first"):
        ctl.request(3)
    ctl.abort("test")
    registry.set_canary(3, 10, rollout_id="manual", reason="by hand")
    assert ctl.status().kind == "unmanaged"
    with pytest.raises(RolloutError, match="clear it first"):
        ctl.request(2)


def test_a_request_that_no_longer_fits_fails_when_started(registry, controller_settings):
    ctl = RolloutController(registry, FixedSource(), controller_settings.rollout)
    ctl.request(2)
    registry.promote(2, reason="meanwhile, by hand")
    out = ctl.step()
    assert out.kind == FAILED and "already production" in out.message
    assert registry.aliases().canary is None
