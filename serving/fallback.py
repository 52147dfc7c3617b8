"""The popularity fallback: what a user gets when the personalised path cannot answer.

Sources, best first: the trending set read live (only before the item table's first sweep),
the trending set of the item table's last sweep (also while Redis is down), the popularity
stored with a loaded model.
Items the user has already seen are never returned.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# Why an answer fell back; the values are metric labels and appear in responses and logs.
UNKNOWN_USER = "unknown_user"
NO_MODEL = "no_model"  # no production alias yet
MODEL_LOADING = "model_loading"  # load still running when the budget ran out
MODEL_UNAVAILABLE = "model_unavailable"  # load failed (store down, tampered version)
MODEL_ERROR = "model_error"  # the model raised
REGISTRY_UNAVAILABLE = "registry_unavailable"  # alias document unreadable
REDIS_UNAVAILABLE = "redis_unavailable"
TIMEOUT = "timeout"  # the model path exceeded the time budget
EMPTY = "empty"  # the model answered with nothing

REASONS = (
    UNKNOWN_USER,
    NO_MODEL,
    MODEL_LOADING,
    MODEL_UNAVAILABLE,
    MODEL_ERROR,
    REGISTRY_UNAVAILABLE,
    REDIS_UNAVAILABLE,
    TIMEOUT,
    EMPTY,
)


def take(
    k: int, exclude: Collection[str], *sources: Iterable[tuple[str, float]] | Iterable[str]
) -> list[str]:
    """The first ``k`` distinct items across ``sources`` (in order), skipping ``exclude``."""
    out: list[str] = []
    if k <= 0:
        return out
    seen = set(exclude)
    for source in sources:
        for entry in source:
            item = entry[0] if isinstance(entry, tuple) else entry
            if item in seen:
                continue
            seen.add(item)
            out.append(item)
            if len(out) >= k:
                return out
    return out


def model_popularity(model: Any, k: int, exclude: Collection[str]) -> list[str]:
    """The popularity ranking stored with a model: its popularity component when it has one,
    else what it recommends to a user it has never seen (popularity, by the model contract).
    Never raises: this is the last resort."""
    if model is None:
        return []
    try:
        target = getattr(model, "popularity", None) or model
        return [i for i, _ in target.recommend("", k, exclude=exclude)]
    except Exception as err:
        log.warning("stored popularity of %s unavailable: %s", type(model).__name__, err)
        return []


def popular_items(
    k: int,
    exclude: Collection[str],
    *,
    live: Sequence[str] = (),
    snapshot: Sequence[tuple[str, float]] = (),
    model: Any = None,
) -> list[str]:
    items = take(k, exclude, live, snapshot)
    if len(items) < k:
        # The trending set is short (young deployment) or unreachable: top up from the model.
        items = take(k, exclude, items, model_popularity(model, k + len(exclude), exclude))
    return items
