"""The training section (training/, `streamrec train`): ``STREAMREC_TRAIN_*``.

These are the trainer's defaults, stated once: ``training.train.TrainConfig`` takes its
defaults from here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.config_section import Section


class TrainSettings(Section):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_TRAIN_")

    # Defaults tuned on a validation split of ML-100K's training part (`train --tune`), not test.
    als_factors: int = Field(32, ge=1, le=1024, description="ALS latent factors.")
    als_regularization: float = Field(0.1, ge=0, description="ALS L2 regularization.")
    als_alpha: float = Field(1.0, gt=0, description="ALS confidence scale (C = alpha*w).")
    als_iterations: int = Field(15, ge=1, le=200, description="ALS sweeps.")
    knn_neighbours: int = Field(200, ge=1, description="Neighbours of the item-kNN baseline.")
    knn_similarity: str = Field(
        "cosine", pattern="^(cosine|bm25|tfidf)$", description="Item-kNN similarity."
    )
    pop_half_life_days: float | None = Field(
        None, gt=0, description="Popularity half-life in days (unset: no decay)."
    )
    candidates: int = Field(200, ge=10, le=5000, description="ALS candidates re-ranked.")
    ranker_rounds: int = Field(200, ge=1, description="Max LightGBM boosting rounds.")
    ranker_max_users: int = Field(
        5000, ge=10, description="Users sampled to build the ranker's training set."
    )
    eval_max_users: int = Field(
        5000, ge=10, description="Holdout users evaluated (sampled with the seed beyond this)."
    )
    threads: int = Field(0, ge=0, description="Threads for ALS and kNN (0: all cores).")
    ranker_threads: int = Field(
        1, ge=0, description="LightGBM threads (OpenMP spinning crawls on busy small hosts)."
    )
    sasrec_epochs: int = Field(
        0, ge=0, le=1000,
        description="Epochs of the SASRec family (JAX, `sequential` extra); 0: not fitted.",
    )  # fmt: skip
    # An epoch's cost is bounded on big data (issue 19): MovieLens-100K (2,436 windows at
    # most, 1,682 items) is under both bounds and trains exactly as the plain SASRec-CE.
    sasrec_max_windows: int = Field(
        5000, ge=1,
        description="SASRec windows (50 items) an epoch at most, sampled afresh each epoch.",
    )  # fmt: skip
    sasrec_full_softmax_items: int = Field(
        3000, ge=0,
        description="Catalogue size up to which SASRec trains with the full softmax.",
    )  # fmt: skip
    sasrec_negatives: int = Field(
        1000, ge=0,
        description="Sampled-softmax negatives a SASRec batch above that size (0: full).",
    )  # fmt: skip
    seed: int = Field(42, description="Random seed of every fitted stage.")
    watch_weight: float = Field(
        1.0, ge=0, description="Weight of watching: watch_weight * log2(1 + watch events)."
    )
    rate_weight: float = Field(
        1.0, ge=0, description="Weight of rating: rate_weight * rating / 5 (latest rating)."
    )
    catalog: str = Field(
        "auto",
        pattern="^(auto|topic|movielens|none)$",
        description="Item catalog for genre/year features: auto, topic, movielens, none.",
    )
    gate_metric: str = Field(
        "ndcg@10", description="Metric the quality gate compares with production."
    )
    gate_min_gain: float = Field(
        0.0, ge=0, description="Relative gain over production the gate requires (0.02 = 2%)."
    )
    gate_min_users: int = Field(
        50, ge=1, description="Fewest holdout users production has not trained on, for a fair gate."
    )
