"""The online-evaluation join with a user's watches grouped into one script entry per
partition batch (the stream processor's hot path): the same conversions as one watch at a
time, and offsets at or below the watermark still skipped one by one. Real Redis."""

from __future__ import annotations

import pytest

from streams.online_eval import JoinBatch, add_events
from tests.support.rollout import WATCH, Harness, resp, watch

pytestmark = pytest.mark.integration


def test_watches_of_a_user_are_one_entry_in_offset_order():
    from schemas.redis_keys import RedisKeys

    batch = JoinBatch()
    evs = [watch("u1", "i1", 1), watch("u2", "i1", 2), watch("u1", "i2", 3)]
    assert add_events(batch, RedisKeys("x"), WATCH, 0, evs, [4, 5, 6]) == 3
    assert [e[:3] for e in batch.entries] == [[1, 6, "w"], [1, 5, "w"]]
    assert [x for j, x in enumerate(batch.entries[0][4]) if j % 3 != 1] == ["i1", 4, "i2", 6]


def test_grouped_watches_convert_like_single_ones(settings):
    h = Harness(settings)
    h.send(resp("a", "u1", ["i1", "i2"], 0), resp("b", "u1", ["i2"], 0))
    # One batch of the watch partition: i2 then i1 (both users' responses pending).
    h.oe.add(WATCH, 0, [watch("u1", "i2", 5), watch("u1", "i1", 6)], [0, 1])
    counts = h.oe.apply()
    assert counts[("reco|2|canary", "converted")] == 2  # each response once
    assert h.count("pos:2") == 1 and h.count("pos:1") == 1  # a: by i2 (2nd), b: by i2 (1st)
    assert not h.r.exists(h.keys.online_eval_pending("u1"))


def test_a_replayed_group_skips_the_offsets_already_joined(settings):
    h = Harness(settings)
    h.send(resp("a", "u1", ["i1"], 0), offsets=[0])
    h.oe.add(WATCH, 0, [watch("u1", "i9", 5)], [0])  # offset 0 joined: converts nothing
    h.oe.apply()
    h.send(resp("b", "u1", ["i9"], 0), offsets=[1])  # pending now
    # Replay of offsets 0..1: the i9 watch at offset 0 must not convert b; i1 at 1 converts a.
    h.oe.add(WATCH, 0, [watch("u1", "i9", 5), watch("u1", "i1", 6)], [0, 1])
    counts = h.oe.apply()
    assert counts == {("reco|2|canary", "converted"): 1, ("reco|2|canary", "pos:1"): 1}
    assert h.r.hkeys(h.keys.online_eval_pending("u1")) == ["b"]
