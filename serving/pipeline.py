"""One recommendation: fresh features from Redis, the routed model version from the cache,
the model call within the time budget, and the popularity fallback whenever any of it fails.
This never raises for an outage: the answer is then popularity, with the reason."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from models.base import ModelCall
from serving import fallback
from serving.context import ServingContext
from serving.errors import ModelUnavailable
from serving.features import UserFeatures, read_trending, read_user_features
from serving.probe import Probe
from serving.recommendation import Recommendation
from serving.routing import CANARY, FALLBACK, PRODUCTION, choose_version

if TYPE_CHECKING:
    from models.base import Recommender

log = logging.getLogger(__name__)


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = time.perf_counter() + budget_s

    def left(self) -> float:
        return max(self.end - time.perf_counter(), 0.0)


async def _features(ctx: ServingContext, user_id: str, k: int, deadline: _Deadline):
    try:
        return await read_user_features(ctx.reader, ctx.keys, user_id, timeout=deadline.left())
    except (RedisError, OSError, TimeoutError) as err:
        log.debug("redis read for %s failed: %s", user_id, err)
        return None


async def _live_trending(ctx: ServingContext, n: int, deadline: _Deadline) -> list[str]:
    """The trending head read now, only while the item table has none yet (before its first
    sweep); afterwards the sweep's copy (at most ``serve_item_features_refresh_s`` old, the
    worker's own recompute cadence) is the fallback's source, with no round trip."""
    if ctx.items.trending:
        return []
    try:
        return await read_trending(ctx.reader, ctx.keys, n, timeout=max(deadline.left(), 0.005))
    except (RedisError, OSError, TimeoutError) as err:
        log.debug("trending read failed: %s", err)
        return []


async def _model(
    ctx: ServingContext, reco: Recommendation, deadline: _Deadline
) -> tuple[Any, str, int | None, str | None]:
    """(model or None, variant, version, fallback reason); sets ``reco.assigned`` from the
    alias document it routes with (the one decision of the user's variant)."""
    try:
        aliases = await ctx.models.aliases(deadline.left())
    except TimeoutError:
        return None, FALLBACK, None, fallback.REGISTRY_UNAVAILABLE
    except Exception as err:
        log.debug("aliases unreadable: %s", err)
        return None, FALLBACK, None, fallback.REGISTRY_UNAVAILABLE
    choice = reco.assigned = choose_version(aliases, reco.user_id)
    if choice is None:
        return None, FALLBACK, None, fallback.NO_MODEL
    variant, version = choice
    try:
        return await ctx.models.get(version, deadline.left()), variant, version, None
    except (TimeoutError, ModelUnavailable) as err:
        reason = (
            fallback.MODEL_LOADING if isinstance(err, TimeoutError) else fallback.MODEL_UNAVAILABLE
        )
    if variant == CANARY and aliases.production is not None:
        # A broken canary must not hurt its users: production answers them instead.
        prod = ctx.models.peek(aliases.production.version)
        if prod is not None:
            return prod, PRODUCTION, aliases.production.version, None
    return None, FALLBACK, version, reason


def has_signal(model: Recommender, user_id: str, history: list[str]) -> bool:
    """Whether the model can personalise: it knows the user, or some of the fresh history."""
    return model.known_user(user_id) or any(model.knows_item(item) for item in history)


def seen_by(ctx: ServingContext, user_id: str, recent: list[str], model: Any) -> frozenset[str]:
    """Everything this worker knows the user saw: the whole Redis history read with the
    request and the training-time items of every loaded model version (the routed one
    included), so a history longer than Redis keeps is still excluded from popularity."""
    seen = set(recent)
    models = ctx.models.loaded_models()
    if model is not None and all(model is not m for m in models):
        models.append(model)
    for m in models:
        try:
            seen.update(m.seen_items(user_id))
        except Exception as err:  # the fallback must answer whatever a model does
            log.warning("seen items of %r unreadable: %s", user_id, err)
    return frozenset(seen)


async def _personal(
    ctx: ServingContext, reco: Recommendation, model: Any, feats: UserFeatures, deadline
) -> tuple[list[str], str | None]:
    """(items, fallback reason) of the model path: memoised, or a model call in the budget."""
    user_id, k, version = reco.user_id, reco.k, reco.model_version
    recent = feats.recent
    history = feats.history(ctx.settings.serve.history_len)
    # No key to build while the cache is off (STREAMREC_SERVE_RESULT_CACHE_SIZE=0).
    key = (version, user_id, k, tuple(recent), ctx.items.generation) if ctx.results else None
    cached = ctx.results.get(key) if key is not None else None
    if cached is not None:
        ctx.metrics.labelled(ctx.metrics.result_cache, "hit").inc()
        return cached, None
    if not has_signal(model, user_id, history):
        return [], fallback.UNKNOWN_USER
    ctx.metrics.labelled(ctx.metrics.result_cache, "miss").inc()
    # Nothing the user saw: the Redis history and (the model bans them) training items.
    call = ModelCall(user_id, k, history, recent, ctx.items.features)
    try:
        # With the calls of concurrent requests, in one hand-off to the compute thread (or
        # on the loop itself with STREAMREC_SERVE_MODEL_INLINE): serving.batcher.
        scored = await ctx.batcher.call(model, call, deadline.left(), marks=reco.marks)
    except TimeoutError:
        return [], fallback.TIMEOUT
    except Exception:
        log.exception("model v%s failed for user %r", version, user_id)
        return [], fallback.MODEL_ERROR
    items = [item for item, _ in scored[:k]]
    if not items:
        return [], fallback.EMPTY
    if key is not None:
        ctx.results.put(key, items)
    return items, None


async def recommend(
    ctx: ServingContext, user_id: str, k: int, *, reco: Recommendation | None = None
) -> Recommendation:
    """The answer for ``user_id``, filled into ``reco`` (a new record if None) as it is
    decided, and returned: the user's assigned variant, then the answer and its latency.
    Logged to Kafka here; the route and the metrics read the same record."""
    started = time.perf_counter()
    if reco is None:
        reco = Recommendation(user_id=user_id, k=k, model_name=ctx.models.name)
    deadline = _Deadline(ctx.settings.serve.budget_ms / 1000)
    model, reason = None, None
    # On its way to the model call: a batch about to start may wait for it (serving.batcher).
    with ctx.batcher.arriving():
        feats: UserFeatures | None = await _features(ctx, user_id, k, deadline)
        Probe.mark(reco.marks, "features")
        if feats is None:
            reason = fallback.REDIS_UNAVAILABLE
            # Not routed through the registry this time: the aliases in effect assign it.
            reco.assigned = choose_version(ctx.models.current_aliases, user_id)
        else:
            model, reco.variant, reco.model_version, reason = await _model(ctx, reco, deadline)
            Probe.mark(reco.marks, "model")
    if model is not None and reason is None and feats is not None:  # no feats: no model
        reco.items, reason = await _personal(ctx, reco, model, feats, deadline)

    if reason is not None:
        ctx.metrics.labelled(ctx.metrics.fallbacks, reason).inc()
        recent = feats.recent if feats else []
        reco.items = fallback.popular_items(
            k,
            seen_by(ctx, user_id, recent, model),
            live=await _live_trending(ctx, k + len(recent), deadline) if feats else (),
            snapshot=ctx.items.trending,
            model=model or ctx.models.any_loaded(),
        )
        reco.variant, reco.model_version = FALLBACK, None
    reco.fallback_reason = reason
    reco.latency_ms = (time.perf_counter() - started) * 1000
    reco.done = True
    ctx.sink.log_recommendation(reco)
    Probe.mark(reco.marks, "logged")
    return reco
