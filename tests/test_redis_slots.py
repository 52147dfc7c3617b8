"""SlotRunner.run_many on the real Redis Cluster of the clustered stack: calls of several
slots come back in order, each master gets one pipeline and one WAIT for all of its calls,
and every durable call leaves its marker (so a retry's WAIT covers what it found applied)."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.redis import connect
from schemas.redis_keys import RedisKeys
from streams.redis_slots import SlotRunner

pytestmark = pytest.mark.integration

ECHO_SET = "redis.call('SET', KEYS[1], ARGV[1]); return ARGV[1]"


def _waits(r) -> dict[str, int]:
    """WAIT calls so far, per master."""
    out = {}
    for node in r.get_primaries():
        stats = r.info("commandstats", target_nodes=node)
        out[node.name] = int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return out


def test_run_many_sends_one_wait_per_master_and_answers_in_order(on_cluster: Settings) -> None:
    keys = RedisKeys(on_cluster.redis.key_prefix, 12)
    r = connect(on_cluster.redis.url, cluster=True, decode_responses=True)
    runner = SlotRunner(r, url=on_cluster.redis.url, min_replicas=1, wait_timeout_ms=5000)
    calls = [(keys.slot(p).watermark("t.watch", p), [f"v{p}"]) for p in range(12)]
    masters = {r.get_node_from_key(k).name for k, _ in calls}
    assert len(masters) == 3  # 12 partitions spread over the 3 masters

    before = _waits(r)
    replies = runner.run_many(ECHO_SET, calls)
    after = _waits(r)

    assert [x.decode() if isinstance(x, bytes) else x for x in replies] == [
        f"v{p}" for p in range(12)
    ]
    # One WAIT per master (the script load round, if any, repeats it: at most two).
    assert all(1 <= after[m] - before[m] <= 2 for m in masters), (before, after)
    for key, (value,) in calls:
        assert r.get(key) == value
    # The marker each WAIT follows: one per master's pipeline, beside its first call's key.
    marked = {r.get_node_from_key(k).name for k, _ in calls if r.pttl(k + ":ack") > 0}
    assert marked == masters
    # Again: the script is loaded now, so exactly one WAIT per master.
    before = _waits(r)
    runner.run_many(ECHO_SET, calls)
    after = _waits(r)
    assert all(after[m] - before[m] == 1 for m in masters), (before, after)
    runner.close()
    r.close()
