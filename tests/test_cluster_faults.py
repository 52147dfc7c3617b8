"""The scale-out promise, proven with faults on the clustered stack (3 KRaft brokers with
replication 3 and min ISR 2, a Redis Cluster of 3 masters + 3 replicas): two stream workers
share the partitions while one of them, then a broker, then a Redis master is killed with
SIGKILL mid-replay, and two API processes answer ``/recommend`` throughout.

The final check is exact: the Parquet snapshots hold every produced event id once, Redis's
counters equal the truth computed from what was produced, and every answer was a 200
(fallbacks allowed, and counted)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.kafka import ensure_topics
from core.redis import connect
from schemas.redis_keys import RedisKeys
from streamrec import stack
from streamrec.stack.redis_topology import redis_health
from tests.support.serving import live_server
from tests.support.stream_worker import (
    Truth,
    committed_vs_end,
    kill_mid_stream,
    produce_catalog,
    produce_events,
    start_worker,
    verify,
    wait_caught_up,
    wait_for_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_ENV = {
    "STREAMREC_REDIS_CLUSTER": "true",
    "STREAMREC_REDIS_MIN_REPLICAS_ACK": "1",
    "STREAMREC_REDIS_WAIT_TIMEOUT_MS": "2000",
    "STREAMREC_TOPIC_REPLICATION_FACTOR": "3",
    "STREAMREC_TOPIC_MIN_INSYNC_REPLICAS": "2",
}


class Traffic:
    """Clients calling ``/recommend`` on every API in a loop (bounded: it stops when told or
    after ``max_s``), counting status codes and what answered (the variant, or the fallback's
    reason)."""

    def __init__(self, urls: list[str], users: list[str], max_s: float = 600) -> None:
        self.urls, self.users, self.max_s = urls, users, max_s
        self.codes: Counter[int] = Counter()
        self.answered_by: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,)) for u in urls]

    def _run(self, url: str) -> None:
        rng = random.Random(url)
        deadline = time.monotonic() + self.max_s
        with httpx.Client(base_url=url, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                user = rng.choice(self.users)
                try:
                    r = client.get(f"/recommend/{user}", params={"k": 10})
                except httpx.HTTPError as err:
                    self.errors.append(f"{url}: {err!r}")
                    continue
                self.codes[r.status_code] += 1
                if r.status_code == 200:
                    body = r.json()
                    self.answered_by[body.get("fallback_reason") or body["variant"]] += 1
                time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _clean(s: Settings) -> None:
    """Drop the test's topics and keys (the cluster outlives the session)."""
    from core.kafka import delete_topics

    delete_topics(s.kafka, timeout=10)
    r = connect(s.redis.url, cluster=True)
    for key in r.scan_iter(f"{s.redis.key_prefix}:*", count=10_000):
        r.delete(key)
    r.close()


def _kill(pid: int) -> None:
    """SIGKILL, then wait until the process is gone (and its ports free): the nodes are not
    our children, so their end is watched through /proc."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if ") Z " in stat:  # a zombie holds no ports
            break
        time.sleep(0.1)


def _pid_of(cluster: Settings, name: str) -> int:
    states = {st.name: st for st in stack.status(cluster, topology="cluster")}
    pid = states[name].pid
    assert pid, f"{name} is not running: {states[name]}"
    return pid


def test_two_workers_survive_a_worker_a_broker_and_a_redis_master_killed(
    cluster_stack: Settings, tmp_path: Path
) -> None:
    tag = os.urandom(4).hex()
    s = cluster_stack.with_sections(
        kafka={"topic_prefix": f"cf{tag}"},
        redis={"key_prefix": f"cf{tag}", "min_replicas_ack": 1},
        storage={"url": f"file://{tmp_path / 'storage'}"},
    )
    ensure_topics(s.kafka)
    truth = Truth()
    genres = produce_catalog(s, 300)
    rng = random.Random(12)
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = {name: start_worker(s, logs / f"{name}.log", **CLUSTER_ENV) for name in ("a", "b")}
    produced = 0
    try:
        with (
            live_server(s, logs, ready=False, **CLUSTER_ENV) as api1,
            live_server(s, logs, ready=False, **CLUSTER_ENV) as api2,
        ):
            # The APIs log every answer to Kafka, so traffic stops before the catch-up check.
            with Traffic([api1.url, api2.url], [f"u{i}" for i in range(2000)]) as traffic:
                wait_for_log(logs / "a.log", "assigned", count=1, procs=list(workers.values()))
                produce_events(s, truth, genres, 30_000, start=0, bad_every=997)
                produced = 30_000

                # 1. A worker dies mid-replay; the other takes its partitions over, and it comes
                # back.
                produced += kill_mid_stream(
                    s, truth, genres, workers["a"], rng, start=produced, chunk=20_000
                )
                workers["a"] = start_worker(s, logs / "a.log", **CLUSTER_ENV)

                # 2. A broker dies mid-replay: producer and workers carry on (min ISR 2 of 3).
                _kill(_pid_of(cluster_stack, "kafka-2"))
                produce_events(s, truth, genres, 20_000, start=produced, bad_every=997)
                produced += 20_000
                # A JVM start on a busy 2-core machine can pass the 60 s default: allow more.
                stack.up(cluster_stack, ["kafka"], topology="cluster", timeout=180)  # catches up

                # 3. A Redis master dies mid-replay: its replica is promoted. Until the old
                # master is back as a replica, WAIT cannot be satisfied, so offsets are held.
                health = redis_health(cluster_stack)
                master = next(n for n in health.nodes if n.is_master and n.slots)
                victim = next(
                    st
                    for st in stack.status(cluster_stack, topology="cluster")
                    if st.port == master.port
                )
                produce_events(s, truth, genres, 10_000, start=produced, bad_every=997)
                produced += 10_000
                time.sleep(0.5)
                committed, end = committed_vs_end(s)
                assert victim.pid
                _kill(victim.pid)
                produce_events(s, truth, genres, 10_000, start=produced, bad_every=997)
                produced += 10_000
                time.sleep(3 * cluster_stack.cluster.redis_node_timeout_ms / 1000)
                stack.up(cluster_stack, ["redis"], topology="cluster", timeout=180)  # whole

            try:
                wait_caught_up(s, 240, list(workers.values()))
            except AssertionError as err:
                tails = {
                    f.name: "\n".join(f.read_text(errors="replace").splitlines()[-25:])
                    for f in sorted(logs.glob("*.log"))
                }
                raise AssertionError(f"{err}\n{tails}") from None
    finally:
        for p in workers.values():
            p.kill()
            p.wait()
        stack.up(cluster_stack, topology="cluster")  # whole again for the next test
    try:
        assert committed < end, "the Redis master died while there was work in flight"
        assert sum(len(v) for v in truth.ids.values()) >= produced * 0.99
        verify(s, truth)
        # Every request was answered, with a 200; fallbacks are allowed and were counted.
        assert not traffic.errors, traffic.errors[:5]
        assert set(traffic.codes) == {200}, traffic.codes
        assert sum(traffic.codes.values()) > 100
        print(f"answers: {dict(traffic.codes)}, answered by: {dict(traffic.answered_by)}")
        # The users' fresh histories are where serving looks for them.
        r = connect(s.redis.url, cluster=True, decode_responses=True)
        keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
        user = sorted(truth.user)[0]
        assert r.zcard(keys.user_slot(user).user_recent(user)) > 0
    finally:
        _clean(s)
