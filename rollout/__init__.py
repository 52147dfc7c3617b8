"""Canary rollouts: statistics, the controller that executes the registry's rollout
document (:mod:`schemas.rollout`) against its alias document, and the closed-loop simulator.

Public API: :class:`RolloutController`, :class:`RolloutBook`, :class:`LiveMetricsSource`,
:func:`evaluate` with :class:`ArmStats` / :class:`Thresholds`, :func:`harm_test`, and
:class:`Simulator`.
"""

from __future__ import annotations

from rollout.controller import Outcome, RolloutController
from rollout.decision import ArmStats, Thresholds, Verdict, evaluate
from rollout.errors import MetricsUnavailable, RolloutError, RolloutSuperseded, SimulatorError
from rollout.live_source import LiveMetricsSource
from rollout.plan import RolloutBook
from rollout.simulator import Simulator
from rollout.source import MetricsSource, Snapshot
from rollout.stats import harm_test, histogram_quantile

__all__ = [
    "ArmStats",
    "LiveMetricsSource",
    "MetricsSource",
    "MetricsUnavailable",
    "Outcome",
    "RolloutBook",
    "RolloutController",
    "RolloutError",
    "RolloutSuperseded",
    "Simulator",
    "SimulatorError",
    "Snapshot",
    "Thresholds",
    "Verdict",
    "evaluate",
    "harm_test",
    "histogram_quantile",
]
