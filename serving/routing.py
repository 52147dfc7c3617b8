"""Which model version answers a user: production, or the canary for a stable slice of users.

A user's slice is a hash of the user id and the rollout id, so the same user sees the same
variant for the whole rollout (consistent experience, clean comparison) and a new rollout
draws a new slice.
"""

from __future__ import annotations

import hashlib

from schemas.manifest import AliasDocument

PRODUCTION = "production"
CANARY = "canary"
FALLBACK = "fallback"


def canary_bucket(user_id: str, rollout_id: str) -> float:
    """A number in [0, 100) that is uniform over users and fixed per (user, rollout)."""
    digest = hashlib.blake2b(f"{rollout_id}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


def choose_version(aliases: AliasDocument | None, user_id: str) -> tuple[str, int] | None:
    """(variant, version) for ``user_id``, or None when nothing is in production."""
    if aliases is None or aliases.production is None:
        return None
    canary = aliases.canary
    if (
        canary is not None
        and canary.weight > 0
        and canary_bucket(user_id, canary.rollout_id) < canary.weight
    ):
        return CANARY, canary.version
    return PRODUCTION, aliases.production.version
