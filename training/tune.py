"""Honest hyper-parameter search: every candidate setting is fitted on the training part
minus each user's last 20% (``schemas.split`` applied again, to train) and scored on that
20%. The test holdout is never looked at. Used offline (``streamrec train --tune``) to pick
the defaults in Settings; the chosen values and their validation scores are reported."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import replace

from schemas.split import temporal_test_mask
from training.data import Interactions
from training.evaluate import make_holdout, ranking_metrics
from training.train import TrainConfig, fit_als, fit_knn, fit_popularity

log = logging.getLogger(__name__)

ALS_GRID = {
    "als_factors": (32, 64, 128),
    "als_regularization": (0.01, 0.1, 1.0),
    "als_alpha": (1.0, 5.0, 20.0),
}
KNN_GRID = {"knn_similarity": ("cosine", "bm25", "tfidf"), "knn_neighbours": (20, 50, 100, 200)}
POP_GRID = {"pop_half_life_days": (3.0, 7.0, 30.0, 90.0, None)}


def validation_split(train: Interactions) -> tuple[Interactions, Interactions]:
    """(fit part, validation part) of the training interactions."""
    mask = temporal_test_mask(train.users, train.ts)
    return train.subset(~mask), train.subset(mask)


def _grid(grid: dict) -> list[dict]:
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def tune(
    train: Interactions,
    base: TrainConfig,
    *,
    max_users: int | None = 5000,
    on_trial: Callable[[str, dict, float], None] | None = None,
) -> tuple[TrainConfig, list[dict]]:
    """Best ALS, kNN and popularity settings by validation NDCG@10; returns the tuned
    config and every trial (``{"model", "params", "ndcg@10"}``)."""
    fit, valid = validation_split(train)
    holdout = make_holdout(fit, valid, max_users=max_users, seed=base.seed)
    trials: list[dict] = []
    best = base
    for model, grid, fitter in (
        ("als", ALS_GRID, fit_als),
        ("item-knn", KNN_GRID, fit_knn),
        ("popularity", POP_GRID, fit_popularity),
    ):
        scored = []
        for params in _grid(grid):
            cfg = replace(best, **params)
            ndcg = ranking_metrics(fitter(fit, cfg), holdout)["ndcg@10"]
            trials.append({"model": model, "params": params, "ndcg@10": ndcg})
            scored.append((ndcg, params))
            if on_trial:
                on_trial(model, params, ndcg)
        ndcg, params = max(scored, key=lambda t: t[0])
        log.info("best %s: %s (validation NDCG@10 %.4f)", model, params, ndcg)
        best = replace(best, **params)
    return best, trials
