"""Warm-up: a few real scoring calls on a model before any request may reach it.

A freshly loaded model's first calls are several times slower than the rest (lazily built
indexes and memoised arrays, first touches of the artifacts' memory, LightGBM's first
predict), and a live item-feature table is turned into arrays on its first use by each model.
Paid by a request, that is a ``timeout`` fallback; paid here, on the loader thread, before
the model enters the cache (``/readyz`` waits for it, an alias change is adopted only after
it) or before a new feature table is swapped in, nobody waits for it.

Generic over the :class:`~models.base.Recommender` contract: the calls use a user no model
knows with a history of popular items the model knows (its fold-in path), the same user with
no history (its unknown-user path) and the lookups the request path makes."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from models.base import ModelCall
from serving import fallback

if TYPE_CHECKING:
    from models.base import Recommender

log = logging.getLogger(__name__)

WARM_USER = "\x00warm-up"  # never a real user id (ids have no control characters)
HISTORY_LENGTHS = (1, 5, 20)  # short and long histories take different array sizes
K = 20


def warm_history(model: Recommender, trending: Sequence[str], n: int) -> list[str]:
    """Up to ``n`` items the model knows: the live trending head, else its own popularity."""
    items = [item for item in trending if model.knows_item(item)][:n]
    if len(items) < n:
        stored = fallback.model_popularity(model, n, ())
        items += [item for item in stored if item not in items and model.knows_item(item)]
    return items[:n]


def warm_model(
    model: Recommender,
    *,
    trending: Sequence[str] = (),
    item_features: Mapping[str, Mapping[str, float]] | None = None,
    rounds: int = 2,
) -> int:
    """Scoring calls like the request path's, ``rounds`` times over; returns the number of
    calls made. Never raises: a model that fails here fails its requests the same way, and
    they have their own fallback (``model_error``)."""
    started = time.perf_counter()
    calls = 0
    try:
        longest = warm_history(model, trending, max(HISTORY_LENGTHS))
        for _ in range(rounds):
            for n in (0, *HISTORY_LENGTHS):
                history = longest[:n]
                model.known_user(WARM_USER)
                exclude = frozenset(history).union(model.seen_items(WARM_USER))
                model.recommend(
                    WARM_USER, K, history=history, exclude=exclude, item_features=item_features
                )
                calls += 1
            # The request path's own call: its calls batched (serving.batcher).
            batch = [
                ModelCall(WARM_USER, K, longest[:n], longest[:n], item_features)
                for n in (0, *HISTORY_LENGTHS)
            ]
            calls += len(model.recommend_unseen_batch(batch))
    except Exception as err:
        log.warning("warm-up of %s failed after %d calls: %s", type(model).__name__, calls, err)
    log.debug(
        "warmed %s: %d calls in %.1f ms",
        type(model).__name__,
        calls,
        (time.perf_counter() - started) * 1000,
    )
    return calls
