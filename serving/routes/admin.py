"""Admin endpoints: list model versions, promote, roll back, set or clear the canary.
Every one requires ``Authorization: Bearer <token>`` (see ``deps.require_admin``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from schemas.manifest import AliasDocument
from serving.bodies import RequestBody, strict_json
from serving.context import ServingContext
from serving.deps import AdminDep, ContextDep
from serving.problems import BODY_ERRORS, INVALID, problem

log = logging.getLogger(__name__)

# What every admin endpoint may answer (admin_rollouts shares it).
ADMIN_ERRORS: dict[int | str, dict] = {
    401: problem("Missing or wrong bearer token."),
    403: problem("Admin endpoints are disabled (no token configured)."),
    409: problem(
        "The registry refused the change (nothing to roll back to, a conflicting "
        "write, a corrupt version)."
    ),
    503: problem("The registry's store is unavailable, or the version cannot be loaded."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem("No such model version.")}

router = APIRouter(prefix="/admin", tags=["admin"], responses=ADMIN_ERRORS)

_background: set[asyncio.Task] = set()


class VersionInfo(BaseModel):
    version: int
    kind: str
    created_at: datetime
    notes: str
    metrics: dict[str, dict[str, float]]


class ModelsOut(BaseModel):
    name: str
    aliases: AliasDocument
    serving: AliasDocument | None = Field(description="The aliases this worker serves with.")
    loaded_versions: list[int]
    versions: list[VersionInfo]


class PromoteIn(RequestBody):
    version: int = Field(ge=1)
    reason: str = Field("", max_length=1000)


class RollbackIn(RequestBody):
    reason: str = Field("", max_length=1000)


class CanaryIn(RequestBody):
    version: int = Field(ge=1)
    weight: float = Field(ge=0, le=100, description="Percent of users routed to the canary.")
    rollout_id: str | None = Field(
        None, max_length=128, description="Keeps user slices stable across weight changes."
    )
    reason: str = Field("", max_length=1000)


def _adopt_soon(ctx: ServingContext) -> None:
    """This worker picks up the change now (others at their next poll); loading the new
    version happens in the background, so the admin call does not wait for it."""
    task = asyncio.get_running_loop().create_task(ctx.models.poll_once())
    _background.add(task)
    task.add_done_callback(_background.discard)


@router.get("/models", response_model=ModelsOut, summary="Model versions and aliases")
async def list_models(ctx: ContextDep, _actor: AdminDep) -> ModelsOut:
    registry = ctx.models.registry

    def read() -> tuple[AliasDocument, list[VersionInfo]]:
        infos = []
        for version in registry.versions():
            m = registry.manifest(version)
            infos.append(
                VersionInfo(
                    version=m.version,
                    kind=m.kind,
                    created_at=m.created_at,
                    notes=m.notes,
                    metrics=m.metrics,
                )
            )
        return registry.aliases(), infos

    aliases, versions = await asyncio.to_thread(read)
    return ModelsOut(
        name=ctx.models.name,
        aliases=aliases,
        serving=ctx.models.current_aliases,
        loaded_versions=ctx.models.loaded_versions,
        versions=versions,
    )


@router.post(
    "/promote",
    response_model=AliasDocument,
    summary="Make a version production",
    responses={**BODY_ERRORS, **NOT_FOUND},
    dependencies=[Depends(strict_json)],
)
async def promote(body: PromoteIn, ctx: ContextDep, actor: AdminDep) -> AliasDocument:
    registry = ctx.models.registry
    await asyncio.to_thread(registry.manifest, body.version)  # 404 for an unknown version
    # Loading verifies the version is complete and untampered before it takes traffic.
    await ctx.models.get(body.version)
    doc = await asyncio.to_thread(registry.promote, body.version, reason=body.reason, actor=actor)
    _adopt_soon(ctx)
    return doc


@router.post(
    "/rollback",
    response_model=AliasDocument,
    summary="Back to the previous version",
    responses=BODY_ERRORS,
    dependencies=[Depends(strict_json)],
)
async def rollback(body: RollbackIn, ctx: ContextDep, actor: AdminDep) -> AliasDocument:
    doc = await asyncio.to_thread(ctx.models.registry.rollback, reason=body.reason, actor=actor)
    _adopt_soon(ctx)
    return doc


@router.put(
    "/canary",
    response_model=AliasDocument,
    summary="Set the canary and its weight",
    responses={**BODY_ERRORS, **NOT_FOUND},
    dependencies=[Depends(strict_json)],
)
async def set_canary(body: CanaryIn, ctx: ContextDep, actor: AdminDep) -> AliasDocument:
    registry = ctx.models.registry
    await asyncio.to_thread(registry.manifest, body.version)
    await ctx.models.get(body.version)
    current = (await asyncio.to_thread(registry.aliases)).canary
    rollout_id = body.rollout_id
    if rollout_id is None:
        # A weight change of the running canary keeps its users (same slice, bigger or
        # smaller); a new version is a new rollout.
        same = current is not None and current.version == body.version
        rollout_id = current.rollout_id if current is not None and same else uuid.uuid4().hex[:12]
    doc = await asyncio.to_thread(
        registry.set_canary,
        body.version,
        body.weight,
        rollout_id=rollout_id,
        reason=body.reason,
        actor=actor,
    )
    _adopt_soon(ctx)
    return doc


@router.delete(
    "/canary", response_model=AliasDocument, summary="Stop the canary", responses={422: INVALID}
)
async def clear_canary(
    ctx: ContextDep, actor: AdminDep, reason: str = Query("", max_length=1000)
) -> AliasDocument:
    doc = await asyncio.to_thread(ctx.models.registry.clear_canary, reason=reason, actor=actor)
    _adopt_soon(ctx)
    return doc
