"""``streamrec train`` end to end: read -> split -> fit -> evaluate -> gate -> refit -> publish.

Evaluation and the gate use the per-user temporal split of the data read
(:func:`schemas.split.temporal_test_mask`): every model is fitted on each user's first 80%
and scored on their last 20%. The ranker of the evaluated model learns from a validation
split carved from train the same way. The published model is the same recipe shifted by
one step: ranker trained on train -> holdout, ALS refitted on everything, so the deployed
model knows the newest interactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from core.config import Settings
from core.storage import open_store
from models.registry import ModelRegistry
from schemas.manifest import ModelManifest, TrainingData
from schemas.split import temporal_test_mask
from training.catalog import load_catalog
from training.data import TimeRange, build_interactions, list_snapshots, read_events
from training.errors import NotEnoughDataError
from training.evaluate import make_holdout, ranking_metrics
from training.publish import GateDecision, publish_version, quality_gate
from training.train import TrainConfig, fit_knn, fit_two_stage, generator_for
from training.tune import validation_split

log = logging.getLogger(__name__)

# stage(name, total) -> tick(completed); the CLI draws these as rich progress bars.
StageFn = Callable[[str, int | None], Callable[[int], None]]
CANDIDATE = "als+lgbm"
BASELINES = ("popularity", "als", "item-knn")


@dataclass
class TrainReport:
    training_data: TrainingData
    metrics: dict[str, dict[str, float]]
    decision: GateDecision
    manifest: ModelManifest | None
    config: dict
    facts: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> tuple[str, float]:
        label = max(BASELINES, key=lambda b: self.metrics[b]["ndcg@10"])
        return label, self.metrics[label]["ndcg@10"]

    @property
    def lift_over_best_baseline(self) -> float:
        _, best = self.best_baseline
        return self.metrics[CANDIDATE]["ndcg@10"] / best - 1.0 if best > 0 else float("inf")


def _no_progress(_name: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


def run_training(
    settings: Settings,
    *,
    time_range: TimeRange | None = None,
    force: bool = False,
    promote: bool = False,
    name: str | None = None,
    config: TrainConfig | None = None,
    catalog_source: str | None = None,
    progress: StageFn | None = None,
) -> TrainReport:
    stage = progress or _no_progress
    cfg = config or TrainConfig.from_settings(settings)
    timings: dict[str, float] = {}

    @contextmanager
    def timed(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        t0 = time.perf_counter()
        yield stage(label, total)
        timings[label] = time.perf_counter() - t0

    store = open_store(settings.storage, endpoint_url=settings.s3_endpoint_url)
    registry = ModelRegistry(store, name or settings.model_name)

    listing = list_snapshots(store, time_range or TimeRange())
    with timed("read snapshots", len(listing) or None) as tick:
        events, files = read_events(
            store, time_range, files=listing, on_file=lambda n, _total: tick(n)
        )
        data = build_interactions(
            events, files, watch_weight=settings.train_watch_weight,
            rate_weight=settings.train_rate_weight,
        )  # fmt: skip
        del events
    with timed("item catalog"):
        catalog = load_catalog(settings, data.item_ids, catalog_source or settings.train_catalog)

    test_mask = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~test_mask), data.subset(test_mask)
    if len(test) == 0:
        raise NotEnoughDataError(
            "no user has enough interactions for a temporal holdout (5 or more each)",
            n_users=len(data.user_ids), n_items=len(data.item_ids), n_interactions=len(data),
        )  # fmt: skip
    inner, valid = validation_split(train)

    iters = cfg.als_iterations
    with timed("fit baselines", 2 * iters + 1) as tick:
        g_train, pop_train = generator_for(train, catalog, cfg, lambda i: tick(i + 1))
        knn = fit_knn(train, cfg)
        tick(2 * iters + 1)
    with timed("fit ALS+ranker", None) as tick:
        g_inner, _ = generator_for(inner, catalog, cfg)
        candidate, eval_facts = fit_two_stage(g_inner, valid, g_train, pop_train, cfg, tick)

    holdout = make_holdout(train, test, max_users=settings.train_eval_max_users, seed=cfg.seed)
    models = {"popularity": pop_train, "als": g_train.als, "item-knn": knn, CANDIDATE: candidate}
    metrics: dict[str, dict[str, float]] = {}
    with timed("evaluate", len(holdout) * len(models)) as tick:
        for n, (label, model) in enumerate(models.items()):
            offset = n * len(holdout)
            metrics[label] = ranking_metrics(
                model, holdout, on_user=lambda i, o=offset: tick(o + i)
            )

    with timed("quality gate"):
        decision = quality_gate(
            candidate,
            registry,
            train,
            test,
            metric=settings.train_gate_metric,
            min_gain=settings.train_gate_min_gain,
            min_users=settings.train_gate_min_users,
            max_users=settings.train_eval_max_users,
            seed=cfg.seed,
            force=force,
        )

    manifest = None
    facts = {
        "catalog": catalog.source,
        "catalog_coverage": catalog.coverage,
        "holdout_users": len(holdout),
        "train_interactions": len(train),
        "test_interactions": len(test),
        **{f"eval_{k}": v for k, v in eval_facts.items()},
    }
    if decision.passed:
        with timed("refit on all data", None) as tick:
            g_all, pop_all = generator_for(data, catalog, cfg)
            final, final_facts = fit_two_stage(g_train, test, g_all, pop_all, cfg, tick)
            facts.update({f"final_{k}": v for k, v in final_facts.items()})
        with timed("publish"):
            params = {**cfg.as_dict(), "split": "per-user temporal, last 20% held out",
                      "catalog": catalog.source}  # fmt: skip
            manifest = publish_version(
                registry, final, decision=decision, training_data=data.source,
                params=params, metrics=metrics, promote=promote,
            )  # fmt: skip
    return TrainReport(data.source, metrics, decision, manifest, cfg.as_dict(), facts, timings)
