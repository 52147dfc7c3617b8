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
from training.data import TimeRange, build_interactions, list_snapshots, scan_interaction_events
from training.errors import NotEnoughDataError
from training.evaluate import make_holdout
from training.publish import GateDecision, publish_version, quality_gate
from training.select import (
    BASELINES,
    TWO_STAGE,
    Cut,
    Selection,
    families,
    learn_ranker,
    only_users,
    pick,
    score_all,
    split_users,
)
from training.train import TrainConfig
from training.tune import validation_split

log = logging.getLogger(__name__)

# stage(name, total) -> tick(completed); the CLI draws these as rich progress bars.
StageFn = Callable[[str, int | None], Callable[[int], None]]
CANDIDATE = TWO_STAGE  # the family the trainer was built around (label in metrics)


@dataclass
class TrainReport:
    training_data: TrainingData
    metrics: dict[str, dict[str, float]]
    decision: GateDecision
    manifest: ModelManifest | None
    config: dict
    facts: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    selection: Selection | None = None
    # CPU seconds per stage (every thread of the process): wall time on shared cores is noise.
    cpu_timings: dict[str, float] = field(default_factory=dict)

    @property
    def winner(self) -> str:
        return self.selection.winner if self.selection else CANDIDATE

    @property
    def best_baseline(self) -> tuple[str, float]:
        """The best same-run baseline on the holdout other than the winner."""
        others = [b for b in BASELINES if b != self.winner and b in self.metrics]
        label = max(others, key=lambda b: self.metrics[b]["ndcg@10"])
        return label, self.metrics[label]["ndcg@10"]

    @property
    def lift_over_best_baseline(self) -> float:
        """The winner's holdout NDCG@10 over the best other baseline's."""
        _, best = self.best_baseline
        mine = self.metrics[self.winner]["ndcg@10"]
        return mine / best - 1.0 if best > 0 else float("inf")


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
    cfg = config or TrainConfig.from_settings(settings.train, settings.cache_path)
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}

    @contextmanager
    def timed(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        t0, c0 = time.perf_counter(), time.process_time()
        yield stage(label, total)
        timings[label] = time.perf_counter() - t0
        cpu_timings[label] = time.process_time() - c0
        log.info("%s: %.1f s wall, %.1f s CPU", label, timings[label], cpu_timings[label])

    store = open_store(settings.storage)
    registry = ModelRegistry(store, name or settings.model_name)

    listing = list_snapshots(store, time_range or TimeRange())
    with timed("read snapshots", len(listing) or None) as tick:
        events, files = scan_interaction_events(
            store, time_range, files=listing, on_file=lambda n, _total: tick(n)
        )
        data = build_interactions(
            events, files, watch_weight=settings.train.watch_weight,
            rate_weight=settings.train.rate_weight,
        )  # fmt: skip
        del events
    with timed("item catalog"):
        catalog = load_catalog(
            settings.kafka,
            settings.cache_path,
            data.item_ids,
            catalog_source or settings.train.catalog,
        )

    test_mask = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~test_mask), data.subset(test_mask)
    if len(test) == 0:
        raise NotEnoughDataError(
            "no user has enough interactions for a temporal holdout (5 or more each)",
            n_users=len(data.user_ids), n_items=len(data.item_ids), n_interactions=len(data),
        )  # fmt: skip
    inner, valid = validation_split(train)
    max_users = settings.train.eval_max_users
    c_inner, c_train = Cut(inner, catalog, cfg), Cut(train, catalog, cfg)

    # Selection: every family fitted on inner, scored on validation users the ranker never saw.
    ranker_users, eval_users = split_users(valid, cfg, max_users)
    with timed("fit on validation cut", None) as tick:
        ranker, eval_facts = learn_ranker(c_inner.generator(), valid, ranker_users, cfg, tick)
        models = {f: c_inner.model(f, ranker) for f in families(cfg)}
    v_holdout = make_holdout(inner, only_users(valid, eval_users), seed=cfg.seed)
    with timed("validate", len(v_holdout) * len(models)) as tick:
        validation = score_all(models, v_holdout, tick)
    selection = Selection(pick(validation), validation)
    c_train.warm = c_inner.als()  # train's ALS starts from the validation cut's
    del models, c_inner

    # The report: every family fitted on train, scored on the holdout.
    with timed("fit on train cut", None):
        models = {f: c_train.model(f, ranker) for f in families(cfg)}
    holdout = make_holdout(train, test, max_users=max_users, seed=cfg.seed)
    with timed("evaluate", len(holdout) * len(models)) as tick:
        selection.holdout = score_all(models, holdout, tick)
    winner = selection.winner
    log.info("%s", selection.summary())

    refusal = selection.refusal()
    if refusal is not None and not force:
        decision = GateDecision(False, f"refused: {refusal}", settings.train.gate_metric)
    else:
        with timed("quality gate"):
            decision = quality_gate(
                models[winner], registry, train, test,
                metric=settings.train.gate_metric, min_gain=settings.train.gate_min_gain,
                min_users=settings.train.gate_min_users, max_users=max_users, seed=cfg.seed,
                force=force,
            )  # fmt: skip
        if refusal is not None:
            decision.reason = f"forced (--force) past: {refusal}; {decision.reason}"
            decision.forced = True
    del models

    manifest = None
    facts = {
        "catalog": catalog.source,
        "catalog_coverage": catalog.coverage,
        "holdout_users": len(holdout),
        "validation_users": len(v_holdout),
        "train_interactions": len(train),
        "test_interactions": len(test),
        **{f"eval_{k}": v for k, v in eval_facts.items()},
    }
    if decision.passed:
        with timed("refit on all data", None) as tick:
            c_all = Cut(data, catalog, cfg, warm=c_train.als())
            final_ranker = None
            if winner == TWO_STAGE:
                final_ranker, final_facts = learn_ranker(c_train.generator(), test, None, cfg, tick)
                facts.update({f"final_{k}": v for k, v in final_facts.items()})
            final = c_all.model(winner, final_ranker)
        with timed("publish"):
            params = {**cfg.as_dict(), "split": "per-user temporal, last 20% held out",
                      "catalog": catalog.source, "selection": selection.card()}  # fmt: skip
            manifest = publish_version(
                registry, final, decision=decision, training_data=data.source,
                params=params, metrics=selection.holdout, promote=promote,
                notes=selection.summary(),
            )  # fmt: skip
    return TrainReport(
        data.source, selection.holdout, decision, manifest, cfg.as_dict(), facts, timings,
        selection, cpu_timings,
    )  # fmt: skip
