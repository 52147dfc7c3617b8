"""Admin endpoints of canary rollouts: request one, see where it stands, abort it.

The API writes the rollout document (:mod:`schemas.rollout`); the rollout controller
(``streamrec rollout run``) executes it. An abort also clears the canary here and now, so it
takes effect with no controller running. Bearer auth as the other admin endpoints.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import Field, field_validator

from core.config_rollout import RolloutSettings
from models import rollouts as rollout_docs
from models.registry import ModelRegistry
from models.rollouts import first_error, new_rollout, not_startable
from schemas.errors import RolloutConflict
from schemas.rollout import Rollout, RolloutDocument, parse_steps
from serving.bodies import RequestBody, strict_json
from serving.deps import AdminDep, ContextDep
from serving.errors import InvalidRequest, NoRollout
from serving.problems import BODY_ERRORS, problem
from serving.routes.admin import ADMIN_ERRORS, NOT_FOUND, _adopt_soon

router = APIRouter(prefix="/admin/rollouts", tags=["admin"], responses=ADMIN_ERRORS)


class RolloutIn(RequestBody):
    version: int = Field(ge=1, description="The version to roll out as canary.")
    steps: list[float] | None = Field(
        None, description="Canary weights in percent, e.g. [5, 50, 100]; 100 promotes."
    )
    min_samples: int | None = Field(None, ge=1, description="Recommendations per variant.")
    alpha: float | None = Field(None, gt=0, lt=1, description="Conversion test significance.")
    settle_s: float | None = Field(None, ge=0, description="Wait for late conversions.")
    reason: str = Field("", max_length=1000)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else parse_steps(v)


class AbortIn(RequestBody):
    reason: str = Field("aborted by operator", max_length=1000)


def _request(
    registry: ModelRegistry, rollout: RolloutSettings, body: RolloutIn, actor: str
) -> Rollout:
    registry.manifest(body.version)  # 404 for an unknown version
    problem = not_startable(registry.aliases(), body.version)
    if problem is not None:
        raise RolloutConflict(problem, model=registry.name)
    overrides = body.model_dump(exclude={"version", "reason"})
    try:
        r = new_rollout(
            rollout, registry.name, body.version, actor=actor, reason=body.reason, **overrides
        )
    except ValueError as err:
        raise InvalidRequest("body", first_error(err)) from None
    rollout_docs.update(
        registry.store, registry.name, lambda d: rollout_docs.request(d, r.model_copy(deep=True))
    )
    return r


def _abort(registry: ModelRegistry, reason: str, actor: str) -> Rollout:
    # RolloutConflict when there is nothing to abort: 409.
    r = rollout_docs.abort_current(registry.store, registry.name, reason=reason, actor=actor)
    evidence = {
        "rollout": {"rollout_id": r.rollout_id, "version": r.version, "step": r.step},
        "decision": "abort",
    }
    return rollout_docs.settle_abort(registry, r, evidence)


@router.post(
    "",
    response_model=Rollout,
    status_code=202,
    summary="Request a canary rollout (the rollout controller executes it)",
    responses={
        **BODY_ERRORS,
        **NOT_FOUND,
        409: problem("A rollout is already running, or a canary is live."),
        422: {
            **BODY_ERRORS[422],
            "description": "Invalid JSON or plan (steps, min_samples, alpha).",
        },
    },
    dependencies=[Depends(strict_json)],
)
async def request_rollout(body: RolloutIn, ctx: ContextDep, actor: AdminDep) -> Rollout:
    return await asyncio.to_thread(_request, ctx.models.registry, ctx.settings.rollout, body, actor)


@router.get("", response_model=RolloutDocument, summary="The rollout document")
async def rollouts(ctx: ContextDep, _actor: AdminDep) -> RolloutDocument:
    registry = ctx.models.registry
    return (await asyncio.to_thread(rollout_docs.read, registry.store, registry.name))[0]


@router.get(
    "/current",
    response_model=Rollout,
    summary="The current (or last) rollout: plan, status, step, decisions",
    responses={404: problem("No rollout was ever requested.")},
)
async def current_rollout(ctx: ContextDep, _actor: AdminDep) -> Rollout:
    registry = ctx.models.registry
    doc = (await asyncio.to_thread(rollout_docs.read, registry.store, registry.name))[0]
    if doc.current is None:
        raise NoRollout(registry.name)
    return doc.current


@router.post(
    "/current/abort",
    response_model=Rollout,
    summary="Abort the running rollout: canary weight 0 now",
    responses={**BODY_ERRORS, 409: problem("No rollout is running.")},
    dependencies=[Depends(strict_json)],
)
async def abort_rollout(ctx: ContextDep, actor: AdminDep, body: AbortIn | None = None) -> Rollout:
    reason = (body or AbortIn()).reason
    r = await asyncio.to_thread(_abort, ctx.models.registry, reason, actor)
    _adopt_soon(ctx)
    return r
