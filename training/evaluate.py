"""Offline evaluation of any :class:`~models.base.Recommender` on a per-user temporal
holdout: full ranking over all items (no sampled negatives), the user's earlier items
excluded, binary relevance. A user the model does not know is given their earlier items as
``history`` (as serving would from Redis) so every model is judged on the same users."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.base import Recommender
from training.data import Interactions

METRICS = ("ndcg@10", "recall@10", "hitrate@10", "coverage@10")


@dataclass
class Holdout:
    """Per evaluated user: their earlier items (newest first) and the held-out items."""

    users: list[str]
    history: list[list[str]]
    targets: list[set[str]]
    n_items: int

    def __len__(self) -> int:
        return len(self.users)


def make_holdout(
    train: Interactions, test: Interactions, *, max_users: int | None = None, seed: int = 0
) -> Holdout:
    """Users with at least one held-out interaction (at most ``max_users``, sampled with a
    fixed seed so every model and the gate see the same users)."""
    test_users = np.unique(test.users)
    if max_users is not None and len(test_users) > max_users:
        rng = np.random.default_rng(seed)
        test_users = np.sort(rng.choice(test_users, size=max_users, replace=False))
    keep = np.zeros(len(train.user_ids), dtype=bool)
    keep[test_users] = True
    ids = train.item_ids
    # Rows are sorted by user then time, so slicing per user keeps time order.
    tr = np.flatnonzero(keep[train.users])
    te = np.flatnonzero(keep[test.users])
    tr_bounds = _bounds(train.users[tr], test_users)
    te_bounds = _bounds(test.users[te], test_users)
    users, history, targets = [], [], []
    for n, u in enumerate(test_users.tolist()):
        a, b = tr_bounds[n]
        c, d = te_bounds[n]
        users.append(str(train.user_ids[u]))
        history.append([str(x) for x in ids[train.items[tr[a:b]]][::-1]])
        targets.append({str(x) for x in ids[test.items[te[c:d]]]})
    return Holdout(users, history, targets, len(ids))


def _bounds(sorted_users: np.ndarray, wanted: np.ndarray) -> list[tuple[int, int]]:
    lo = np.searchsorted(sorted_users, wanted, side="left")
    hi = np.searchsorted(sorted_users, wanted, side="right")
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


_DISCOUNT = 1.0 / np.log2(np.arange(2, 1002))


def ranking_metrics(
    model: Recommender,
    holdout: Holdout,
    *,
    k: int = 10,
    on_user: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """NDCG@k, Recall@k (hits / held-out items), HitRate@k and catalog coverage@k
    (distinct recommended items / items in the data), averaged over the holdout's users."""
    if len(holdout) == 0:
        return dict.fromkeys(METRICS, 0.0)
    ndcg = recall = hit = 0.0
    seen: set[str] = set()
    for n, (user, hist, target) in enumerate(
        zip(holdout.users, holdout.history, holdout.targets, strict=True)
    ):
        known = model.known_user(user)
        recs = model.recommend(user, k, history=() if known else hist, exclude=set(hist))
        got = [item for item, _ in recs[:k]]
        seen.update(got)
        rel = np.fromiter((item in target for item in got), dtype=bool, count=len(got))
        hits = int(rel.sum())
        if hits:
            dcg = float(_DISCOUNT[: len(got)][rel].sum())
            idcg = float(_DISCOUNT[: min(len(target), k)].sum())
            ndcg += dcg / idcg
            recall += hits / len(target)
            hit += 1.0
        if on_user:
            on_user(n + 1)
    n_users = len(holdout)
    return {
        "ndcg@10": ndcg / n_users,
        "recall@10": recall / n_users,
        "hitrate@10": hit / n_users,
        "coverage@10": len(seen) / max(holdout.n_items, 1),
    }
