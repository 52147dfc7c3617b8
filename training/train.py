"""Stage 2: fit every model. Plain functions over :class:`~training.data.Interactions`.

The two-stage model is trained as a "shift by one" recipe: the ranker learns from ALS
candidates of an *earlier* cut of the data labelled by what users did next, and is then
applied on top of ALS fitted on the full cut. :func:`fit_two_stage` takes both cuts, so
the same code builds the evaluated model (earlier = train minus validation, labels =
validation, full = train) and the published one (earlier = train, labels = holdout,
full = everything).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import TrainSettings
from models.als import ALSModel
from models.features import FEATURES, RECENT_ITEMS, ItemStats
from models.knn import ItemKNNModel
from models.popularity import PopularityModel
from models.ranker import Ranker
from models.signals import (
    KNN_FEATURES,
    SASREC_FEATURES,
    TRANSITION_FEATURES,
    Signals,
    transition_matrix,
)
from models.two_stage import CandidateGenerator, TwoStageModel
from training.catalog import ItemCatalog
from training.data import Interactions

if TYPE_CHECKING:
    from training.sasrec import SASRecConfig

log = logging.getLogger(__name__)
_DEFAULT = TrainSettings.model_fields
RANKER_FEATURES = (*FEATURES, *TRANSITION_FEATURES, *KNN_FEATURES)

Tick = Callable[[int], None]


@dataclass
class TrainConfig:
    """Hyper-parameters (chosen on a validation split carved from train, see tune.py). Those
    the train section sets default to its defaults, stated there once."""

    als_factors: int = _DEFAULT["als_factors"].default
    als_regularization: float = _DEFAULT["als_regularization"].default
    als_alpha: float = _DEFAULT["als_alpha"].default
    als_iterations: int = _DEFAULT["als_iterations"].default
    # Sweeps of an ALS fit started from the factors of the cut before (validation cut ->
    # train -> all data: each a superset of the last), instead of a cold fit's als_iterations.
    als_warm_iterations: int = 5
    knn_neighbours: int = _DEFAULT["knn_neighbours"].default
    knn_similarity: str = _DEFAULT["knn_similarity"].default
    ease_l2: float = 200.0
    ease_max_items: int = 3000
    ease_neighbours: int = 200
    pop_half_life_days: float | None = _DEFAULT["pop_half_life_days"].default
    n_candidates: int = _DEFAULT["candidates"].default
    ranker_rounds: int = _DEFAULT["ranker_rounds"].default
    ranker_max_users: int = _DEFAULT["ranker_max_users"].default
    # LambdaRank learns as well from a sample of each user's negatives (measured on the
    # structured 1M set: 6.5x faster to fit, -1.6% validation NDCG@10); all positives stay.
    ranker_max_rows: int = 300_000
    ranker_params: dict = field(default_factory=dict)
    # The ranker's features (issue 19, chosen on the validation split: bench/sequential_ranker.py);
    # SASRec's join them when the run fits SASRec (sasrec_epochs > 0) and ranker_sasrec is on.
    ranker_features: tuple[str, ...] = RANKER_FEATURES
    ranker_sasrec: bool = True
    seq_candidates: int = 0  # SASRec's top-N added to ALS's candidates (needs SASRec)
    seed: int = _DEFAULT["seed"].default
    threads: int = _DEFAULT["threads"].default
    ranker_threads: int = _DEFAULT["ranker_threads"].default
    # SASRec (training/sasrec.py): 0 epochs leaves the sequential family out of the run.
    sasrec_epochs: int = _DEFAULT["sasrec_epochs"].default
    sasrec_cache_dir: str | None = None  # JAX's compilation cache (settings.cache_path/jax)
    sasrec_max_windows: int = _DEFAULT["sasrec_max_windows"].default
    sasrec_full_softmax_items: int = _DEFAULT["sasrec_full_softmax_items"].default
    sasrec_negatives: int = _DEFAULT["sasrec_negatives"].default

    def sasrec(self) -> SASRecConfig:
        from training.sasrec import SASRecConfig

        return SASRecConfig(
            epochs=self.sasrec_epochs, seed=self.seed, cache_dir=self.sasrec_cache_dir,
            max_windows=self.sasrec_max_windows, negatives=self.sasrec_negatives,
            full_softmax_items=self.sasrec_full_softmax_items,
        )  # fmt: skip

    def feature_names(self) -> tuple[str, ...]:
        """The ranker's features in a run with this configuration."""
        seq = SASREC_FEATURES if self.sasrec_epochs > 0 and self.ranker_sasrec else ()
        return (*self.ranker_features, *(f for f in seq if f not in self.ranker_features))

    def wants_sasrec(self) -> bool:
        """Whether the two-stage model needs the run's SASRec."""
        names = self.feature_names()
        return self.sasrec_epochs > 0 and (
            self.seq_candidates > 0 or any(f in SASREC_FEATURES for f in names)
        )

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_settings(cls, train: TrainSettings, cache_dir: Path) -> TrainConfig:
        """The train section's values; ``cache_dir`` (``Settings.cache_path``) holds JAX's
        compilation cache for the SASRec fit."""
        return cls(
            als_factors=train.als_factors,
            als_regularization=train.als_regularization,
            als_alpha=train.als_alpha,
            als_iterations=train.als_iterations,
            knn_neighbours=train.knn_neighbours,
            knn_similarity=train.knn_similarity,
            pop_half_life_days=train.pop_half_life_days,
            n_candidates=train.candidates,
            ranker_rounds=train.ranker_rounds,
            ranker_max_users=train.ranker_max_users,
            seed=train.seed,
            threads=train.threads,
            ranker_threads=train.ranker_threads,
            sasrec_epochs=train.sasrec_epochs,
            sasrec_cache_dir=str(cache_dir / "jax"),
            sasrec_max_windows=train.sasrec_max_windows,
            sasrec_full_softmax_items=train.sasrec_full_softmax_items,
            sasrec_negatives=train.sasrec_negatives,
        )


def fit_popularity(data: Interactions, cfg: TrainConfig) -> PopularityModel:
    return PopularityModel.fit(
        data.item_ids, data.items, data.ts, data.weights, half_life_days=cfg.pop_half_life_days
    )


def fit_als(
    data: Interactions, cfg: TrainConfig, tick: Tick | None = None, init: ALSModel | None = None
) -> ALSModel:
    """ALS on ``data``; warm-started from ``init`` (fitted on the same id maps) when given
    and cfg.als_warm_iterations > 0 (0: a cold fit)."""
    warm = init if cfg.als_warm_iterations > 0 else None
    return ALSModel.fit(
        data.user_items(),
        factors=cfg.als_factors,
        regularization=cfg.als_regularization,
        alpha=cfg.als_alpha,
        iterations=cfg.als_iterations if warm is None else cfg.als_warm_iterations,
        init=warm,
        random_state=cfg.seed,
        num_threads=cfg.threads,
        callback=tick,
    )


def fit_knn(data: Interactions, cfg: TrainConfig) -> ItemKNNModel:
    with warnings.catch_warnings():
        # implicit's cosine normalisation hands its own kNN a COO matrix and then warns.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        return ItemKNNModel.fit(
            data.user_items(),
            neighbours=cfg.knn_neighbours,
            similarity=cfg.knn_similarity,
            num_threads=cfg.threads,
        )


def item_stats(data: Interactions, catalog: ItemCatalog, pop: PopularityModel) -> ItemStats:
    rated = ~np.isnan(data.ratings)
    pop_scores = np.zeros(len(data.item_ids))
    index = {item: j for j, item in enumerate(data.item_ids.tolist())}
    for item, score in zip(pop.item_ids.tolist(), pop.scores.tolist(), strict=True):
        pop_scores[index[item]] = score
    return ItemStats.build(
        len(data.item_ids),
        data.items,
        data.ts,
        pop_scores,
        rating_codes=data.items[rated],
        ratings=data.ratings[rated].astype(np.float64),
        genres=catalog.genres,
        genre_names=catalog.genre_names,
        release_years=catalog.release_years,
        reference_time=float(data.ts.max()),
    )


def user_rating_mean(data: Interactions) -> np.ndarray:
    rated = ~np.isnan(data.ratings)
    n = len(data.user_ids)
    count = np.bincount(data.users[rated], minlength=n)
    total = np.bincount(data.users[rated], weights=data.ratings[rated], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def user_recent(data: Interactions, n: int = RECENT_ITEMS) -> np.ndarray:
    """Each user's ``n`` newest item columns, newest first (-1 padded)."""
    out = np.full((len(data.user_ids), n), -1, dtype=np.int32)
    # Rows are sorted by user then time: walk each user's run backwards.
    ends = np.searchsorted(data.users, np.arange(len(data.user_ids)), side="right")
    starts = np.searchsorted(data.users, np.arange(len(data.user_ids)), side="left")
    for k in range(n):
        pos = ends - 1 - k
        ok = pos >= starts
        out[ok, k] = data.items[pos[ok]]
    return out


def generator_for(
    data: Interactions, catalog: ItemCatalog, cfg: TrainConfig, tick: Tick | None = None
) -> tuple[CandidateGenerator, PopularityModel]:
    als = fit_als(data, cfg, tick)
    pop = fit_popularity(data, cfg)
    return generator_parts(data, catalog, als, pop, cfg), pop


def generator_parts(
    data: Interactions,
    catalog: ItemCatalog,
    als: ALSModel,
    pop: PopularityModel,
    cfg: TrainConfig | None = None,
    *,
    knn: ItemKNNModel | None = None,
    sasrec: Any = None,
) -> CandidateGenerator:
    """The candidate generator of ALS and popularity already fitted on ``data``, with the
    features of ``cfg`` (FEATURES when None); ``knn`` / ``sasrec``: fitted on ``data`` too
    (the kNN one is fitted here when the features need it and none is given)."""
    stats = item_stats(data, catalog, pop)
    names = cfg.feature_names() if cfg is not None else FEATURES
    signals = Signals(seq_candidates=cfg.seq_candidates if cfg and sasrec is not None else 0)
    if any(f in TRANSITION_FEATURES for f in names):
        counts = np.bincount(data.users, minlength=len(data.user_ids))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        signals.transitions = transition_matrix(indptr, data.items, len(data.item_ids))
    if any(f in KNN_FEATURES for f in names):
        assert cfg is not None
        signals.knn = (knn or fit_knn(data, cfg)).similarity
    if any(f in SASREC_FEATURES for f in names) or signals.seq_candidates:
        if sasrec is None:  # a run without SASRec: the ranker goes without its features
            names = tuple(f for f in names if f not in SASREC_FEATURES)
        signals.sasrec = sasrec
    return CandidateGenerator(
        als, stats, user_rating_mean(data), user_recent(data), signals=signals,
        feature_names=names,
    )  # fmt: skip


def ranker_dataset(
    gen: CandidateGenerator,
    labels: Interactions,
    cfg: TrainConfig,
    tick: Tick | None = None,
    *,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of users who have label rows (of ``users`` only, when given), labelled 1
    if the user interacted with the item in ``labels``. Users with no positive candidate
    teach LambdaRank nothing: dropped."""
    users = np.intersect1d(np.unique(labels.users), users if users is not None else labels.users)
    if len(users) > cfg.ranker_max_users:
        users = np.sort(
            np.random.default_rng(cfg.seed).choice(users, cfg.ranker_max_users, replace=False)
        )
    lo = np.searchsorted(labels.users, users, side="left")
    hi = np.searchsorted(labels.users, users, side="right")
    xs, ys, groups = [], [], []
    for n, (u, a, b) in enumerate(zip(users.tolist(), lo.tolist(), hi.tolist(), strict=True)):
        user = str(labels.user_ids[u])
        row = gen.als.user_index.get(user)
        # The user's earlier items are excluded, as they are at evaluation and serving time.
        seen = gen.als.user_items[row].indices if row is not None else None
        got = gen.generate(user, cfg.n_candidates, banned=seen)
        if tick:
            tick(n + 1)
        if got is None or got[0].size == 0:
            continue
        cand, x = got
        y = np.isin(cand, labels.items[a:b]).astype(np.float32)
        if y.any():
            xs.append(x)
            ys.append(y)
            groups.append(len(cand))
    if not xs:
        empty = np.zeros((0, len(gen.feature_names)), np.float32)
        return empty, np.zeros(0), np.zeros(0, np.int64)
    return np.vstack(xs), np.concatenate(ys), np.asarray(groups, dtype=np.int64)


def sample_negatives(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most about ``max_rows`` rows: every positive, negatives sampled uniformly."""
    n_pos = int((y > 0).sum())
    n_neg = len(y) - n_pos
    if len(y) <= max_rows or n_neg == 0:
        return x, y, groups
    rate = max(max_rows - n_pos, len(groups)) / n_neg
    keep = (y > 0) | (np.random.default_rng(seed).random(len(y)) < rate)
    group_of = np.repeat(np.arange(len(groups)), groups)
    return x[keep], y[keep], np.bincount(group_of[keep], minlength=len(groups))


def fit_ranker(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    cfg: TrainConfig,
    names: tuple[str, ...] = FEATURES,
) -> Ranker:
    """LambdaRank over the ``names`` columns of ``x``, early stopping on a random fifth of
    the users."""
    x, y, groups = sample_negatives(x, y, groups, cfg.ranker_max_rows, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    is_valid = rng.random(len(groups)) < 0.2
    row_valid = np.repeat(is_valid, groups)
    valid = None
    if is_valid.any() and (~is_valid).any():
        valid = (x[row_valid], y[row_valid], groups[is_valid])
        x, y, groups = x[~row_valid], y[~row_valid], groups[~is_valid]
    return Ranker.fit(
        x,
        y,
        groups,
        names,
        valid=valid,
        params=cfg.ranker_params,
        rounds=cfg.ranker_rounds,
        seed=cfg.seed,
        num_threads=cfg.ranker_threads,
    )


def fit_two_stage(
    earlier: CandidateGenerator,
    labels: Interactions,
    full: CandidateGenerator,
    full_pop: PopularityModel,
    cfg: TrainConfig,
    tick: Tick | None = None,
) -> tuple[TwoStageModel, dict]:
    """Ranker trained on ``earlier``'s candidates labelled by ``labels``, served on top of
    ``full``. Returns the model and facts about the ranker's training set."""
    x, y, groups = ranker_dataset(earlier, labels, cfg, tick)
    if len(groups) < 2:
        raise_not_enough(labels)
    ranker = fit_ranker(x, y, groups, cfg, earlier.feature_names)
    facts = {
        "ranker_rows": len(y),
        "ranker_users": len(groups),
        "ranker_positive_rate": float(y.mean()),
        "ranker_rounds": ranker.best_iteration,
    }
    return TwoStageModel(full, ranker, full_pop, n_candidates=cfg.n_candidates), facts


def raise_not_enough(labels: Interactions) -> None:
    from training.errors import NotEnoughDataError

    raise NotEnoughDataError(
        "too little data to train the ranker: fewer than 2 users have a held-out item among "
        "their ALS candidates",
        n_users=len(np.unique(labels.users)),
        n_items=len(labels.item_ids),
        n_interactions=len(labels),
    )
