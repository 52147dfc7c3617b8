"""Offline training: snapshots -> interactions -> ALS + LightGBM ranker -> evaluation ->
quality gate -> registry. Public API: :func:`run_training` and its inputs and report."""

from __future__ import annotations

from training.data import TimeRange, build_interactions, read_events
from training.errors import NoSnapshotsError, NotEnoughDataError, TrainingError
from training.pipeline import TrainReport, run_training
from training.train import TrainConfig

__all__ = [
    "NoSnapshotsError",
    "NotEnoughDataError",
    "TimeRange",
    "TrainConfig",
    "TrainReport",
    "TrainingError",
    "build_interactions",
    "read_events",
    "run_training",
]
