"""Model selection: every family the trainer fits is a publishable Recommender; the one with
the best validation NDCG@10 is published, and it must not lose to a same-run baseline on the
holdout.

Three cuts of the data, each the per-user temporal split of the one before:
``all`` -> ``train`` + ``test`` (the holdout) and ``train`` -> ``inner`` + ``valid``.
Selection fits every family on ``inner`` and scores it on ``valid`` (never on ``test``); the
report fits every family on ``train`` and scores it on ``test``; only the winner is refitted
on ``all`` and published.

The two-stage model's ranker learns from one cut's candidates labelled by what users did
next. For selection it learns from half of the validation users (``ranker_users``) and every
family is scored on the other half (``eval_users``), so no ranker sees the labels it is
judged on; the holdout model puts that same ranker on top of ALS fitted on ``train``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.als import ALSModel
from models.base import Recommender
from models.ease import EaseModel
from models.knn import ItemKNNModel
from models.popularity import PopularityModel
from models.ranker import Ranker
from models.two_stage import CandidateGenerator, TwoStageModel
from training.catalog import ItemCatalog
from training.data import Interactions
from training.evaluate import Holdout, ranking_metrics
from training.train import (
    TrainConfig,
    fit_als,
    fit_knn,
    fit_popularity,
    fit_ranker,
    generator_parts,
    raise_not_enough,
    ranker_dataset,
)

log = logging.getLogger(__name__)

TWO_STAGE = "als+lgbm"
FAMILIES = ("popularity", "item-knn", "als", "ease", TWO_STAGE)
# The sequential family (SASRec-CE, JAX-trained): fitted when TrainConfig.sasrec_epochs > 0.
SEQUENTIAL = "sasrec"
# What a published version must not lose to on the holdout: the simple models of the run
# and the plain SASRec-CE (when fitted).
BASELINES = ("popularity", "item-knn", "als", SEQUENTIAL)
METRIC = "ndcg@10"

Tick = Callable[[int], None]


def families(cfg: TrainConfig) -> tuple[str, ...]:
    """The families a run fits and selects among."""
    return (*FAMILIES, SEQUENTIAL) if cfg.sasrec_epochs > 0 else FAMILIES


def fit_sequential(data: Interactions, cfg: TrainConfig) -> Recommender:
    from training.sasrec import fit_sasrec  # imports JAX: only runs that fit SASRec pay it

    return fit_sasrec(data, cfg.sasrec())


def fit_ease(data: Interactions, cfg: TrainConfig) -> EaseModel:
    return EaseModel.fit(
        data.user_items(),
        l2=cfg.ease_l2,
        max_items=cfg.ease_max_items,
        neighbours=cfg.ease_neighbours,
    )


class Cut:
    """One cut of the data and the models fitted on it, each fitted at most once."""

    def __init__(
        self,
        data: Interactions,
        catalog: ItemCatalog,
        cfg: TrainConfig,
        *,
        warm: ALSModel | None = None,
    ) -> None:
        self.data = data
        self.catalog = catalog
        self.cfg = cfg
        # ALS of the cut before (a subset of these rows, same id maps): this cut's ALS starts
        # from its factors (cfg.als_warm_iterations sweeps instead of a cold fit's).
        self.warm = warm
        self._models: dict[str, Recommender] = {}
        self._generator: CandidateGenerator | None = None

    def model(self, family: str, ranker: Ranker | None = None) -> Recommender:
        if family == TWO_STAGE:
            if ranker is None:
                raise ValueError("the two-stage model needs a ranker")
            popularity = self.model("popularity")
            assert isinstance(popularity, PopularityModel)  # what fit_popularity returns
            return TwoStageModel(
                self.generator(), ranker, popularity,
                n_candidates=self.cfg.n_candidates,
            )  # fmt: skip
        if family not in self._models:
            if family == "als":
                self._models[family] = fit_als(self.data, self.cfg, init=self.warm)
                self.warm = None  # its factors are copied: let the earlier cut go
                return self._models[family]
            fit = {"popularity": fit_popularity, "item-knn": fit_knn,
                   "ease": fit_ease, SEQUENTIAL: fit_sequential}[family]  # fmt: skip
            self._models[family] = fit(self.data, self.cfg)
        return self._models[family]

    def als(self) -> ALSModel:
        """This cut's ALS (the next cut's warm start)."""
        als = self.model("als")
        assert isinstance(als, ALSModel)  # what fit_als returns
        return als

    def generator(self) -> CandidateGenerator:
        if self._generator is None:
            als, pop = self.model("als"), self.model("popularity")
            assert isinstance(als, ALSModel) and isinstance(
                pop, PopularityModel
            )  # fit_* give these
            knn: ItemKNNModel | None = None
            if any(f.startswith("knn") for f in self.cfg.feature_names()):
                fitted = self.model("item-knn")  # the kNN family's fit: its similarity
                assert isinstance(fitted, ItemKNNModel)
                knn = fitted
            seq = self.model(SEQUENTIAL) if self.cfg.wants_sasrec() else None
            self._generator = generator_parts(
                self.data, self.catalog, als, pop, self.cfg, knn=knn, sasrec=seq
            )
        return self._generator


def split_users(labels: Interactions, cfg: TrainConfig, max_eval: int | None) -> tuple:
    """(ranker users, evaluation users) of ``labels``: disjoint halves, shuffled by the seed,
    each capped (ranker_max_users, max_eval)."""
    users = np.random.default_rng(cfg.seed).permutation(np.unique(labels.users))
    half = len(users) // 2
    evaluate, learn = users[:half], users[half:]
    if max_eval is not None:
        evaluate = evaluate[:max_eval]
    return np.sort(learn[: cfg.ranker_max_users]), np.sort(evaluate)


def learn_ranker(
    gen: CandidateGenerator,
    labels: Interactions,
    users: np.ndarray | None,
    cfg: TrainConfig,
    tick: Tick | None = None,
) -> tuple[Ranker, dict]:
    x, y, groups = ranker_dataset(gen, labels, cfg, tick, users=users)
    if len(groups) < 2:
        raise_not_enough(labels)
    ranker = fit_ranker(x, y, groups, cfg, gen.feature_names)
    facts = {
        "ranker_rows": len(y),
        "ranker_users": len(groups),
        "ranker_positive_rate": float(y.mean()),
        "ranker_rounds": ranker.best_iteration,
    }
    return ranker, facts


def only_users(labels: Interactions, users: np.ndarray) -> Interactions:
    keep = np.zeros(len(labels.user_ids), dtype=bool)
    keep[users] = True
    return labels.subset(keep[labels.users])


def score_all(
    models: dict[str, Recommender], holdout: Holdout, tick: Tick | None = None
) -> dict[str, dict[str, float]]:
    from threadpoolctl import threadpool_limits

    out = {}
    # One user's scoring is a few small products: BLAS threads only contend for the cores
    # (SASRec's forward pass: 14 ms CPU on 2 threads, 1.4 ms on one).
    with threadpool_limits(1, "blas"):
        for n, (label, model) in enumerate(models.items()):
            offset = n * len(holdout)
            on_user = (lambda i, o=offset: tick(o + i)) if tick else None
            out[label] = ranking_metrics(model, holdout, on_user=on_user)
    return out


@dataclass
class Selection:
    """Which family won on validation, and how every family did there and on the holdout."""

    winner: str
    validation: dict[str, dict[str, float]]
    holdout: dict[str, dict[str, float]] = field(default_factory=dict)

    def lifts(self) -> dict[str, float]:
        """The winner's relative holdout NDCG@10 gain over each other family."""
        mine = self.holdout[self.winner][METRIC]
        return {
            label: (mine / m[METRIC] - 1.0 if m[METRIC] > 0 else float("inf"))
            for label, m in self.holdout.items()
            if label != self.winner
        }

    def beaten_by(self) -> list[str]:
        """Same-run baselines that beat the winner on the holdout."""
        mine = self.holdout[self.winner][METRIC]
        return [
            b for b in BASELINES
            if b != self.winner and b in self.holdout and self.holdout[b][METRIC] > mine
        ]  # fmt: skip

    def refusal(self) -> str | None:
        """Why the winner must not be published (None: it beats every baseline)."""
        beaten = self.beaten_by()
        if not beaten:
            return None
        mine = self.holdout[self.winner][METRIC]
        who = ", ".join(f"{b} {self.holdout[b][METRIC]:.4f}" for b in beaten)
        return (
            f"{self.winner} (best on validation) loses to a same-run baseline on the holdout: "
            f"{METRIC} {mine:.4f} < {who}"
        )

    def summary(self) -> str:
        """One line for the model card: the winner and its holdout gain over each baseline."""
        mine = self.holdout[self.winner][METRIC]
        lifts = self.lifts()
        over = ", ".join(f"{b} {lifts[b]:+.1%}" for b in BASELINES if b in lifts)
        return (
            f"{self.winner} won validation {METRIC} "
            f"({self.validation[self.winner][METRIC]:.4f}); holdout {METRIC} {mine:.4f}, "
            f"over baselines: {over or 'none'}"
        )

    def card(self) -> dict:
        return {
            "family": self.winner,
            "metric": METRIC,
            "validation": {k: v[METRIC] for k, v in self.validation.items()},
            "holdout": {k: v[METRIC] for k, v in self.holdout.items()},
            "holdout_lift": self.lifts(),
        }


def pick(validation: dict[str, dict[str, float]]) -> str:
    """The best family by validation NDCG@10; ties go to the simpler (earlier) family."""
    order = (*FAMILIES, SEQUENTIAL)
    return max(validation, key=lambda f: (validation[f][METRIC], -order.index(f)))
