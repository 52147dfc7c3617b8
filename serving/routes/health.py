"""Operations endpoints: liveness, readiness (every dependency, and a model loaded), metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core.kafka import check_kafka
from serving.deps import ContextDep
from serving.errors import ModelUnavailable

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


async def _check(name: str, coro, checks: dict[str, str]) -> None:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
        checks[name] = "ok"
    except TimeoutError:
        checks[name] = f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as err:
        checks[name] = f"{type(err).__name__}: {err}"[:300]


async def _model_loaded(ctx) -> None:
    aliases = await ctx.models.aliases(CHECK_TIMEOUT_S)
    if aliases.production is None:
        raise ModelUnavailable(ctx.models.name, None, "no production version yet")
    # Starts the (lazy) load if nothing asked for the model yet, so probes warm the worker.
    await ctx.models.get(aliases.production.version, CHECK_TIMEOUT_S)


async def _features_read(ctx) -> None:
    # The first sweep of the live item features, and the warm-up of the loaded models on
    # them: before it, the first requests would pay for turning the table into arrays.
    await ctx.items.swept.wait()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: Kafka, Redis and the registry reachable, the production model loaded "
    "and warmed, the live item features read",
    responses={503: {"model": Readiness, "description": "Some check failed."}},
)
async def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, str] = {}
    await asyncio.gather(
        _check("redis", ctx.redis.ping(), checks),
        _check(
            "kafka", asyncio.to_thread(check_kafka, ctx.settings.kafka, CHECK_TIMEOUT_S), checks
        ),
        _check("registry", asyncio.to_thread(ctx.store.check), checks),
    )
    await _check("model", _model_loaded(ctx), checks)
    await _check("item_features", _features_read(ctx), checks)
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=dict(sorted(checks.items())))
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(ctx: ContextDep) -> Response:
    body, content_type = ctx.metrics.render()
    return Response(body, media_type=content_type)
