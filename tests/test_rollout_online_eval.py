"""Online evaluation: the join of reco responses with later watches, on the real Redis
(the join script) and as pure functions (batch building)."""

from __future__ import annotations

import orjson
import pytest

from schemas.redis_keys import RedisKeys
from streams.online_eval import JoinBatch, add_events, count_applied, payload
from tests.support.rollout import RESP, T0, WATCH, Harness, resp, watch


def test_batches_keep_responses_and_watches_with_their_partition_and_offset():
    keys = RedisKeys("x")
    batch = JoinBatch()
    assert add_events(batch, keys, RESP, 3, [resp("a", "u1", ["i1"], 0)], [10]) == 1
    assert add_events(batch, keys, WATCH, 3, [watch("u1", "i1", 5)], [7]) == 1
    assert add_events(batch, keys, RESP, 3, [resp("b", "u1", [], 0)], [11]) == 0  # nothing served
    assert batch.watermarks == ["x:oe:wm:p.reco_responses:3", "x:oe:wm:p.watch:3"]
    assert [e[:3] for e in batch.entries] == [[1, 10, "r"], [2, 7, "w"]]
    doc = orjson.loads(payload(batch, window_s=60, cap=5))
    assert doc["e"][0][7] == "reco|2|canary" and doc["e"][0][8] == "x:oe:h:2024050112"
    assert doc["e"][0][9] == f"x:oe:b:{int(T0.timestamp())}"
    assert count_applied([b"reco|2|canary", b"served", "reco|2|canary", "served"]) == {
        ("reco|2|canary", "served"): 2
    }


@pytest.mark.integration
def test_a_watch_after_the_response_converts_it_once(settings):
    h = Harness(settings)
    h.send(resp("a", "u1", ["i1", "i2", "i3"], 0))
    assert h.count("served") == 1 and h.count("converted") == 0
    counts = h.send(watch("u1", "i2", 30))
    assert counts[("reco|2|canary", "converted")] == 1
    h.send(watch("u1", "i3", 40))  # a second hit of the same response: still one conversion
    assert h.count("converted") == 1 and h.count("pos:2") == 1 and h.count("pos:3") == 0
    # The same counts in the response's 10-second serve-time bucket (the step cohorts).
    bucket = h.r.hgetall(h.keys.online_eval_bucket(T0.timestamp() + 9))
    assert bucket == {
        "reco|2|canary|served": "1",
        "reco|2|canary|converted": "1",
        "reco|2|canary|pos:2": "1",
    }


@pytest.mark.integration
def test_a_watch_applied_before_its_response_still_converts_it(settings):
    # The watch's offset reached Redis first (other topic, other batch).
    h = Harness(settings)
    h.send(watch("u1", "i3", 10))
    h.send(resp("a", "u1", ["i1", "i2", "i3"], 0))
    assert h.count("converted") == 1 and h.count("pos:3") == 1
    assert not h.r.exists(h.keys.online_eval_pending("u1"))  # converted: nothing to keep


@pytest.mark.integration
def test_the_window_and_other_users_items_do_not_convert(settings):
    h = Harness(settings, window_s=60)
    h.send(resp("a", "u1", ["i1"], 0), resp("b", "u2", ["i1"], 0, variant="production"))
    h.send(watch("u1", "i1", 61))  # too late
    h.send(watch("u1", "i9", 5))  # not recommended
    h.send(watch("u3", "i1", 5))  # someone else
    h.send(watch("u2", "i1", -5))  # before the response
    assert h.count("served") == 1 and h.count("converted") == 0
    assert h.count("served", "production") == 1 and h.count("converted", "production") == 0


@pytest.mark.integration
def test_redelivered_offsets_are_not_counted_twice(settings):
    h = Harness(settings)
    r1, w1 = resp("a", "u1", ["i1"], 0), watch("u1", "i1", 5)
    h.send(r1, offsets=[0])
    h.send(w1, offsets=[0])
    # A restart replays both (their offsets are at or below the watermarks): no effect.
    assert h.send(r1, offsets=[0]) == {}
    assert h.send(w1, offsets=[0]) == {}
    assert h.count("served") == 1 and h.count("converted") == 1
    wm = h.r.get(h.keys.online_eval_watermark(RESP, 0))
    assert wm == "0"


@pytest.mark.integration
def test_pending_responses_are_capped_per_user(settings):
    h = Harness(settings, cap=3)
    for n in range(6):
        h.send(resp(f"r{n}", "u1", [f"i{n}"], n))
    assert h.r.hlen(h.keys.online_eval_pending("u1")) == 3
    h.send(watch("u1", "i0", 10))  # its response was dropped (oldest first)
    h.send(watch("u1", "i5", 10))
    assert h.count("served") == 6 and h.count("converted") == 1
    assert h.r.ttl(h.keys.online_eval_pending("u1")) > 0
