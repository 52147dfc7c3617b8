"""Canary rollouts: statistics, the controller driven by the registry's alias document, and
the closed-loop simulator.

Public API: :class:`RolloutController`, :class:`LiveMetricsSource`, :func:`evaluate` with
:class:`ArmStats` / :class:`Thresholds`, :func:`harm_test`, and :class:`Simulator`.
"""

from __future__ import annotations

from rollout.controller import Outcome, RolloutController
from rollout.decision import ArmStats, Thresholds, Verdict, evaluate
from rollout.errors import MetricsUnavailable, RolloutError, RolloutSuperseded, SimulatorError
from rollout.live_source import LiveMetricsSource
from rollout.plan import RolloutPlan, RolloutState, current_rollout
from rollout.simulator import Simulator
from rollout.source import MetricsSource, Snapshot
from rollout.stats import harm_test, histogram_quantile

__all__ = [
    "ArmStats",
    "LiveMetricsSource",
    "MetricsSource",
    "MetricsUnavailable",
    "Outcome",
    "RolloutController",
    "RolloutError",
    "RolloutPlan",
    "RolloutState",
    "RolloutSuperseded",
    "Simulator",
    "SimulatorError",
    "Snapshot",
    "Thresholds",
    "Verdict",
    "current_rollout",
    "evaluate",
    "harm_test",
    "histogram_quantile",
]
