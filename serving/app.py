"""The API factory. ``create_app(settings)`` builds a FastAPI app whose lifespan opens the
clients (Redis, Kafka producer, object store) and the model cache; nothing happens at import."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings, get_settings
from serving import openapi
from serving.body_limit import BodyLimitMiddleware
from serving.context import open_context
from serving.metrics import ServingMetrics
from serving.problems import install_error_handlers
from serving.recommendation import Recommendation
from serving.routes import admin, admin_rollouts, feedback, health, recommend

log = logging.getLogger(__name__)

DESCRIPTION = """Real-time recommendations. `GET /recommend/{user_id}` always answers 200 for a
valid request: when the model, Redis or the registry is unavailable, or the time budget is
exceeded, it answers from popularity (`variant: fallback`, with `fallback_reason`).
Admin endpoints need `Authorization: Bearer <token>` and are disabled without a token.
Request bodies larger than `STREAMREC_SERVE_MAX_BODY_BYTES` are refused with 413 unread."""


class MetricsMiddleware:
    """Latency per request, labelled with the route template (bounded cardinality) and, for
    ``/recommend``, the variant / model version of the :class:`Recommendation` the route
    leaves in ``request.state``, and by the variant the user was assigned to and what
    answered, which the rollout controller judges. Plain ASGI: BaseHTTPMiddleware would
    cost more than some of our endpoints."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            observe(self.metrics, scope, status, time.perf_counter() - started)


def observe(metrics: ServingMetrics, scope: Scope, status: int, elapsed: float) -> None:
    """A request's latency in the metrics (:class:`MetricsMiddleware`'s, and the
    /recommend fast path's in :class:`StreamrecAPI`)."""
    route = scope.get("route")
    endpoint = getattr(route, "path", None) or "unmatched"
    state = scope.get("state") or {}
    reco: Recommendation | None = state.get("recommendation")
    answered = reco if reco is not None and reco.done else None
    metrics.labelled(
        metrics.request_seconds,
        endpoint,
        answered.variant if answered else "none",
        answered.version_label if answered else "none",
        str(status),
    ).observe(elapsed)
    if reco is not None and reco.marks is not None:  # serving.probe (dev only)
        scope["app"].state.ctx.probe.finish(reco.marks)
    if reco is not None:  # a /recommend request
        # A 5xx raised before the answer was known still counts for the variant.
        metrics.labelled(
            metrics.recommend_seconds,
            *reco.assignment_labels(),
            *reco.answer_labels(),
            str(status),
        ).observe(elapsed)


class StreamrecAPI(FastAPI):
    """FastAPI, with plainly valid ``GET /recommend/{user_id}`` requests answered before its
    middleware stack by :class:`~serving.routes.recommend.RecommendFastPath` (issue 14: the
    stack's layers were ~4% of a worker's CPU at max load) and counted as the metrics
    middleware counts every other request. Not while FastAPI's own OpenTelemetry
    instrumentation is on, or the app has a root path: then the stack answers them too."""

    fast_path: recommend.RecommendFastPath | None = None
    metrics: ServingMetrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast, metrics = self.fast_path, self.metrics
        ctx = getattr(self.state, "ctx", None)  # set once the lifespan has opened it
        plain = (
            fast.takes(scope, ctx.settings.serve.max_k)
            if fast is not None and ctx is not None and scope["type"] == "http"
            else None
        )
        if plain is None or metrics is None or self.root_path or self._traced(scope):
            await super().__call__(scope, receive, send)
            return
        assert fast is not None and ctx is not None
        scope["app"] = self  # as Starlette sets it for the endpoints
        started, status = time.perf_counter(), 500
        try:
            status = await fast.serve(ctx, scope, receive, send, plain)
        finally:
            observe(metrics, scope, status, time.perf_counter() - started)

    def _traced(self, scope: Scope) -> bool:
        # FastAPI's check before it wraps a request in its telemetry (pinned FastAPI).
        telemetry = getattr(self, "_native_telemetry", None)
        return "fastapi.telemetry" in scope or (telemetry is not None and telemetry.enabled())


def create_app(
    settings: Settings | None = None, *, metrics: ServingMetrics | None = None
) -> FastAPI:
    settings = settings or get_settings()
    metrics = metrics or ServingMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings, metrics) as ctx:
            app.state.ctx = ctx
            yield

    app = StreamrecAPI(
        title="streamrec",
        summary="Real-time recommendation API",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    for module in (recommend, feedback, health, admin, admin_rollouts):
        app.include_router(module.router)
    # Plainly valid GET /recommend requests skip the middleware stack and FastAPI's routing
    # and validation (issue 14); counted in the metrics like the route's.
    route = next(
        r for r in recommend.router.routes if getattr(r, "path", None) == recommend.ROUTE_PATH
    )
    app.fast_path = recommend.RecommendFastPath(route)
    app.metrics = metrics
    # Added before the metrics middleware, so it runs inside it: 413s are counted too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serve.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    openapi.install(app, settings.serve)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``serving.app:app_from_env``) for worker processes, which start
    fresh: they set up logging themselves."""
    from core.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level)
    return create_app(settings)
