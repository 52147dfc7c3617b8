"""Load generation and measurement for ``bench/streams.py``: backlogs (sessions, MovieLens
replay), paced production, the worker and a bare consumer timed on the same topics, and
freshness probes read back from Redis."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from bench._streams_procs import settings_env
from core.config import Settings
from core.kafka import EventProducer, delete_topics
from core.redis import connect
from schemas.redis_keys import RedisKeys
from streams.app import create_app

ROOT = Path(__file__).resolve().parent.parent
# The paced load generator's linger (librdkafka ``linger.ms``); ``--producer-linger-ms``.
LINGER_MS = 1.0


def fresh_settings(base: Settings, tmp: str) -> Settings:
    tag = "bench" + uuid.uuid4().hex[:8]
    return base.with_sections(
        kafka={"topic_prefix": tag},
        redis={"key_prefix": tag},
        storage={"url": f"file://{tmp}/{tag}"},
    )


def cleanup(s: Settings) -> None:
    """Delete the run's topics and Redis keys (a benchmark must not fill the shared stack)."""
    delete_topics(s.kafka)
    cleanup_keys(s)


def cleanup_keys(s: Settings) -> None:
    r = connect(s.redis.url, cluster=s.redis.cluster)
    keys = list(r.scan_iter(f"{s.redis.key_prefix}:*", count=10_000))
    for i in range(0, len(keys), 10_000):
        r.delete(*keys[i : i + 10_000])


def produce_movielens(s: Settings) -> int:
    from ingest.movielens import load_movielens
    from ingest.replay import replay_movielens

    return replay_movielens(s.kafka, load_movielens(s.cache_path).subset("all")).events


def produce_backlog(s: Settings, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    p = EventProducer(s.kafka)
    watch, rate = s.topic("watch"), s.topic("rate")
    t0 = time.time() - n * 0.01
    i = 0
    while i < n:
        user = f"u{rng.randrange(20_000)}"
        item = f"m{int(rng.paretovariate(1.2)) % 3000}"
        for _ in range(rng.randint(1, 20)):  # a session: minutes of one movie, maybe a rating
            ts = datetime.fromtimestamp(t0 + i * 0.01, UTC).isoformat()
            if rng.random() < 0.75:
                doc = {
                    "event_type": "watch",
                    "event_id": f"e{i}",
                    "user_id": user,
                    "item_id": item,
                    "ts": ts,
                    "minute": i % 120,
                }
                p.produce(watch, orjson.dumps(doc), user.encode())
            else:
                doc = {
                    "event_type": "rate",
                    "event_id": f"e{i}",
                    "user_id": user,
                    "item_id": item,
                    "ts": ts,
                    "rating": rng.randrange(1, 6),
                }
                p.produce(rate, orjson.dumps(doc), user.encode())
            i += 1
            if i % 50_000 == 0:
                p.poll(0)
    p.flush(120)


def bare_consumer_rate(s: Settings, n: int) -> float:
    c = Consumer(
        {
            "bootstrap.servers": s.kafka.bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([s.topic("watch"), s.topic("rate")])
    got = 0
    while not c.assignment():  # join the group first; the clock starts at the assignment
        m = c.poll(0.1)
        got += m is not None and not m.error()
    t0 = time.perf_counter()
    while got < n:
        msgs = c.consume(10_000, 2.0)
        for m in msgs:
            m.value(), m.offset()
        got += len(msgs)
    elapsed = time.perf_counter() - t0
    c.close()
    return got / elapsed


def worker_rate(s: Settings, n: int, engine: str = "confluent") -> float:
    worker = create_app(s, until_caught_up=True, engine=engine)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while worker.totals.processed == 0:
        time.sleep(0.005)
    t_first = time.perf_counter()
    thread.join()
    elapsed = time.perf_counter() - t_first
    return worker.totals.processed / elapsed


def paced_produce(
    s: Settings, rate: int, seconds: float, probes: dict, every: int, linger_ms: float = LINGER_MS
) -> None:
    p = EventProducer(s.kafka, **{"linger.ms": linger_ms})
    watch = s.topic("watch")
    # Connect and fetch metadata before the clock starts: a cold producer's first messages
    # wait ~0.5 s for its connection, which showed up as the worker's p99.
    doc = {"event_type": "watch", "event_id": "p-warm", "user_id": "pwarm", "item_id": "m0"}
    p.produce(watch, orjson.dumps({**doc, "ts": datetime.now(UTC).isoformat()}), b"pwarm")
    p.flush(30)
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        due = int((now - start) * rate)
        while i < due:
            probe = i % every == 0
            user = f"probe{i}" if probe else f"u{i % 20_000}"
            doc = {
                "event_type": "watch",
                "event_id": f"f{i}",
                "user_id": user,
                "item_id": f"m{i % 3000}",
                "ts": datetime.now(UTC).isoformat(),
            }
            p.produce(watch, orjson.dumps(doc), user.encode())
            if probe:
                probes[user] = time.time()
            i += 1
        p.poll(0)
        time.sleep(0.001)
    p.flush(30)


def freshness_worker(
    s: Settings,
    rate: int,
    seconds: float,
    engine: str = "confluent",
    log: Path | None = None,
    linger_ms: float = LINGER_MS,
) -> list[float]:
    """Probe latencies (s). ``log``: keep the worker's log there, at DEBUG (the loop's
    per-batch timeline, :mod:`streams.loop_trace` / :mod:`streams.faust_trace`)."""
    # The same stack as ``s`` (single node or cluster: brokers, Redis Cluster, WAIT).
    env = {**settings_env(s), "STREAMREC_STREAM_ENGINE": engine}
    if log is not None:
        env["STREAMREC_LOG_LEVEL"] = "DEBUG"
        env["COLUMNS"] = "1000"  # one line per record: the timeline is read by scripts
    with open(log, "wb") if log is not None else contextlib.nullcontext() as out:
        # The worker writes to its own copy of the file; ours is closed once it has one.
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
            env=env,
            cwd=ROOT,
            stdout=out if out is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
    r = connect(s.redis.url, cluster=s.redis.cluster)
    timeline: list[tuple[float, float]] = []  # (sent, latency) of each probe seen
    try:
        # Wait until the worker is in the group and processing (a warm-up event is visible).
        EventProducer(s.kafka).produce(
            s.topic("watch"),
            orjson.dumps(
                {
                    "event_type": "watch",
                    "event_id": "warm",
                    "user_id": "warmup",
                    "item_id": "m0",
                    "ts": datetime.now(UTC).isoformat(),
                }
            ),
            b"warmup",
        ) or None
        deadline = time.time() + 60
        # A user's keys are in the slot of the partition its events are keyed to.
        while not r.exists(keys.user_slot("warmup").user_stats("warmup")):
            if time.time() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.1)
        probes: dict[str, float] = {}
        prod = threading.Thread(
            target=paced_produce, args=(s, rate, seconds, probes, 50, linger_ms)
        )
        prod.start()
        while prod.is_alive() or probes:
            pending = list(probes)
            if pending:
                pipe = r.pipeline(transaction=False)
                for u in pending:
                    pipe.exists(keys.user_slot(u).user_stats(u))
                now = time.time()
                for u, seen in zip(pending, pipe.execute(), strict=True):
                    if seen:
                        sent = probes.pop(u)
                        timeline.append((sent, now - sent))
            if not prod.is_alive() and time.time() > deadline + seconds + 30:
                break
            time.sleep(0.005)
        return [took for _, took in timeline]
    finally:
        proc.terminate()
        proc.wait(30)
        if log is not None:
            log.with_suffix(".probes").write_text(
                "".join(f"{sent:.3f} {took * 1000:.1f}\n" for sent, took in timeline)
            )


def freshness_bare(
    s: Settings, rate: int, seconds: float, linger_ms: float = LINGER_MS
) -> tuple[list[float], list[float]]:
    """Produce -> consume latencies (s) of two bare consumers reading the same paced
    stream: the batch loop the targets are stated against (``consume(1000, 0.1)``, which
    returns when 1,000 records are there or 100 ms have passed: at 5,000/s its latency is
    mostly that timeout), and a per-message ``poll`` loop, the floor of any consumer."""

    def consumer() -> Consumer:
        c = Consumer(
            {
                "bootstrap.servers": s.kafka.bootstrap,
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 50,
            }
        )
        c.subscribe([s.topic("watch")])
        while not c.assignment():
            c.poll(0.1)
        return c

    batch, polled = consumer(), consumer()
    lat: list[float] = []
    floor: list[float] = []
    prod = threading.Thread(target=paced_produce, args=(s, rate, seconds, {}, 50, linger_ms))

    def poll_loop() -> None:
        while prod.is_alive():
            m = polled.poll(0.1)
            if m is not None and not m.error():
                floor.append(time.time() - m.timestamp()[1] / 1000)

    prod.start()
    poller = threading.Thread(target=poll_loop)
    poller.start()
    while prod.is_alive():
        for m in batch.consume(1000, 0.1):
            if not m.error():
                lat.append(time.time() - m.timestamp()[1] / 1000)
    poller.join()
    batch.close()
    polled.close()
    return lat, floor


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
