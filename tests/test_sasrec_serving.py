"""Serving a sequential version: GET /recommend feeds SASRec the user's fresh sequence from
Redis (the stream worker's recent set, newest first) with no fold-in, for users training
knew and users it never saw. Random weights (no JAX): what is checked is the wiring."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from core.config import Settings
from models.sasrec import SASRecModel
from serving import create_app
from tests.support.serving import publish, running_client, serving_settings, write_history
from training.sasrec import SASRecConfig, init_params

pytestmark = pytest.mark.integration


def _model() -> SASRecModel:
    items = np.array([f"i{j}" for j in range(50)], dtype=object)
    weights = init_params(len(items), SASRecConfig(max_len=8, dim=16, blocks=2, heads=2))
    seqs = np.array([3, 4, 5, 10, 11], dtype=np.int32)  # u0: 3 4 5, u1: 10 11 (oldest first)
    return SASRecModel(
        np.array(["u0", "u1"], dtype=object), items, np.array([0, 3, 5]), seqs, weights,
        blocks=2, heads=2,
    )  # fmt: skip


def test_recommend_reads_the_fresh_sequence_from_redis(settings: Settings) -> None:
    s = serving_settings(settings)
    model = _model()
    publish(s, model)
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_history(r, s, "u0", ["i20", "i21", "i7"])  # oldest first: i7 is the newest
    write_history(r, s, "new", ["i30", "i31"])
    app = create_app(s)

    async def go() -> list[dict]:
        async with running_client(app) as c:
            return [(await c.get(f"/recommend/{u}?k=5")).json() for u in ("u0", "u1", "new")]

    fresh, trained_only, unseen = asyncio.run(go())
    assert all(b["variant"] == "production" and b["model_version"] == 1 for b in (fresh, unseen))
    want = model.recommend_unseen("u0", 5, history=["i7", "i21", "i20"], exclude=["i7"])
    assert fresh["items"] == [i for i, _ in want]
    assert fresh["items"] != [i for i, _ in model.recommend_unseen("u0", 5)]  # order matters
    assert not set(fresh["items"]) & {"i3", "i4", "i5", "i20", "i21", "i7"}
    assert trained_only["items"] == [i for i, _ in model.recommend_unseen("u1", 5)]
    assert unseen["items"] == [
        i for i, _ in model.recommend_unseen("new", 5, history=["i31", "i30"])
    ]
