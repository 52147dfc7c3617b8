"""The serving fast path ranks exactly as the plain computation: ALS fold-in, the top ALS
candidates, their features and LightGBM's own prediction, written out here step by step,
against ``recommend_unseen`` (training row banned by column, history turned into columns
once, trees compiled with lleaves) on a few hundred users with fresh histories."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import Settings
from models.base import excluded_columns
from models.features import LiveItemFeatures, feature_matrix
from models.two_stage import TwoStageModel
from tests.support.serving import trained

K = 20


@pytest.fixture(scope="module")
def model() -> TwoStageModel:
    return trained(str(Settings().cache_path)).model


def plain(model: TwoStageModel, user: str, history: list[str], live: LiveItemFeatures) -> list[str]:
    """The two stages with nothing clever: what the fast path must reproduce."""
    als, gen = model.als, model.generator
    u = als.user_index.get(user)
    fresh = [als.item_index[i] for i in dict.fromkeys(history) if i in als.item_index]
    if u is None and not fresh:
        return [i for i, _ in model.popularity.recommend(user, K, exclude=history)]
    if u is not None and not fresh:
        vec = als.user_factors[u]
    else:  # the training row merged with the history in a dict, then the fold-in
        row = als.user_items[u] if u is not None else None
        merged = {}
        if row is not None:
            merged = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        for j in fresh:
            merged[j] = max(1.0, merged.get(j, 1.0))
        cols = np.fromiter(merged.keys(), np.int64, len(merged))
        vec = als.fold_in(cols, np.fromiter(merged.values(), np.float32, len(merged)))
    scores = (als.item_factors @ vec).astype(np.float64)
    ban = excluded_columns(als.item_index, history, als.seen_items(user))
    scores[ban] = -np.inf
    n = min(model.n_candidates, int(np.isfinite(scores).sum()))
    cand = np.argpartition(-scores, n - 1)[:n]
    cand = cand[np.lexsort((cand, -scores[cand]))]
    hcols = np.asarray(fresh, dtype=np.int64)
    dense = live.dense(als.item_ids)
    x = feature_matrix(
        gen.stats,
        gen.profile(user, hcols),
        cand,
        scores[cand],
        unit_factors=gen.unit_factors,
        overrides=None if dense is None else dense[cand],
    )
    ranked = model.ranker.booster.predict(x, num_threads=1)
    order = np.lexsort((np.arange(cand.size), -ranked))[:K]
    return [str(als.item_ids[cand[i]]) for i in order]


def test_the_fast_path_ranks_exactly_as_lightgbm_and_als(model: TwoStageModel) -> None:
    assert model.ranker.compile() is not False, "lleaves could not compile the ranker"
    rng = np.random.default_rng(7)
    items = model.als.item_ids
    pop = [str(i) for i in items[:400]]
    # Live features for some items, as serving's table would hold them.
    live = LiveItemFeatures(
        {pop[n]: {"pop_all": float(1000 - n), "rating_mean": 3.5} for n in range(0, 400, 3)}
    )
    users = [*model.als.user_ids[:250].tolist(), *(f"new-{n}" for n in range(50))]
    compared = 0
    for n, user in enumerate(users):
        size = int(rng.integers(0, 30)) if n % 5 else 0  # a fifth with no fresh history
        history = [str(i) for i in rng.choice(items, size, replace=False)]
        fast = model.recommend_unseen(user, K, history=history, exclude=history, item_features=live)
        assert [i for i, _ in fast] == plain(model, user, history, live), user
        compared += bool(fast)
    assert compared >= 250


def test_recommend_unseen_is_recommend_without_the_training_items(model: TwoStageModel) -> None:
    user = model.als.user_ids[3]
    seen = set(model.seen_items(user))
    unseen = model.recommend_unseen(user, K, history=["1"], exclude=["2"])
    assert [i for i, _ in unseen] == [
        i for i, _ in model.recommend(user, K, history=["1"], exclude={"2", *seen})
    ]
    als_unseen = model.als.recommend_unseen(user, K, exclude=["2"])
    assert [i for i, _ in als_unseen] == [
        i for i, _ in model.als.recommend(user, K, exclude={"2", *seen})
    ]
    # A model without training rows (the contract's default) excludes what it is told.
    top = [i for i, _ in model.popularity.recommend_unseen(user, 3, exclude=["50"])]
    assert "50" not in top and len(top) == 3
