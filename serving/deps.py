"""Dependencies the routes declare through ``Annotated`` aliases (FastAPI full-stack style).

All are ``async def``: FastAPI runs plain ``def`` dependencies on a thread pool, a thread
hop per dependency per request for what is an attribute lookup."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.config import Settings
from serving.context import ServingContext
from serving.errors import AdminDisabled, Unauthorized
from serving.model_cache import ModelCache


async def get_context(request: Request) -> ServingContext:
    return request.app.state.ctx


ContextDep = Annotated[ServingContext, Depends(get_context)]


async def get_settings(ctx: ContextDep) -> Settings:
    return ctx.settings


async def get_redis(ctx: ContextDep) -> Redis | RedisCluster:
    return ctx.redis


async def get_models(ctx: ContextDep) -> ModelCache:
    return ctx.models


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis | RedisCluster, Depends(get_redis)]
ModelsDep = Annotated[ModelCache, Depends(get_models)]

# auto_error=False: a missing header is answered by require_admin with our own message.
_bearer = HTTPBearer(auto_error=False, description="The configured admin token.")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity for the audit trail, or 403 (no secret configured: disabled,
    never open) / 401 (missing or wrong token). Compared in constant time."""
    secret = settings.serve.admin_token
    if secret is None or not secret.get_secret_value():
        raise AdminDisabled()
    if credentials is None:
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(
        credentials.credentials.encode(), secret.get_secret_value().encode()
    ):
        raise Unauthorized("invalid admin token")
    return "api-admin"


AdminDep = Annotated[str, Depends(require_admin)]
