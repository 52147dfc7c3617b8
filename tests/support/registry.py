"""A tiny popularity model published into a test's registry, for tests of the registry itself
(local and S3) that need real versions but no training."""

from __future__ import annotations

import numpy as np

from models import (
    ModelRegistry,
    PopularityModel,
)
from schemas.manifest import TrainingData


def popularity_model(seed: int = 0) -> PopularityModel:
    rng = np.random.default_rng(seed)
    items = np.array([f"i{j}" for j in range(20)], dtype=object)
    return PopularityModel.fit(items, rng.integers(0, 20, 200), np.zeros(200))


def publish_popularity(registry: ModelRegistry, seed: int = 0) -> int:
    m = registry.publish(
        popularity_model(seed),
        training_data=TrainingData(n_events=200, n_interactions=200, n_users=5, n_items=20),
        params={"seed": seed},
        metrics={"popularity": {"ndcg@10": 0.1}},
    )
    return m.version
