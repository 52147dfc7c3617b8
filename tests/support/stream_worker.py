"""Support for tests that run the stream worker on the real broker and Redis: producing a
catalogue and events while keeping the truth, starting and killing workers, waiting until the
group has caught up, and checking Redis, snapshots and dead letters against the truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from core.kafka import EventProducer, ensure_topics, producer_config
from core.redis import connect
from core.storage import open_store
from schemas.catalog import ItemRecord
from schemas.dead_letter import DeadLetter
from schemas.redis_keys import RedisKeys
from schemas.topics import DEAD_LETTER, EVENT_TOPICS
from streams.app import create_app
from streams.snapshots import read_snapshots
from streams.worker import group_id
from tests.support.redis_view import item_stats, pop_all

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "SciFi"]


class Truth:
    """What the produced events must add up to."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.user = defaultdict(lambda: {"n_watch": 0, "n_rate": 0, "rating_sum": 0.0})
        self.item = defaultdict(lambda: {"n_watch": 0, "n_rate": 0, "rating_sum": 0.0})
        self.pop_all: dict[str, int] = defaultdict(int)
        self.genres = defaultdict(lambda: defaultdict(int))
        self.bad = 0


def produce_catalog(s: Settings, n_items: int) -> dict[str, list[str]]:
    rng = random.Random(7)
    genres = {}
    with EventProducer(s.kafka) as p:
        for i in range(n_items):
            g = rng.sample(GENRES, rng.randint(1, 2))
            genres[f"m{i}"] = g
            p.send_item(ItemRecord(item_id=f"m{i}", title=f"Movie {i}", genres=g))
        p.flush()
    return genres


def produce_events(
    s: Settings, truth: Truth, genres: dict, n: int, *, start: int = 0, bad_every: int = 0
) -> None:
    """``n`` watch/rate events (pre-encoded for speed) for 2,000 users and the catalog's
    items; every ``bad_every``-th message is invalid."""
    rng = random.Random(start)
    items = list(genres)
    p = EventProducer(s.kafka)
    watch_t, rate_t = s.topic("watch"), s.topic("rate")
    for i in range(start, start + n):
        user = f"u{rng.randrange(2000)}"
        item = items[rng.randrange(len(items))]
        ts = datetime.fromtimestamp(T0 + i * 0.5, UTC).isoformat()
        if bad_every and i % bad_every == 0:
            value = (
                b'{"event_type": "watch", "broken'
                if i % 2
                else orjson.dumps(
                    {"event_id": f"e{i}", "user_id": user, "item_id": item, "ts": ts, "minute": -1}
                )
            )
            p.produce(watch_t, value, user.encode())
            truth.bad += 1
            continue
        if rng.random() < 0.7:
            doc = {
                "event_type": "watch",
                "event_id": f"e{i}",
                "user_id": user,
                "item_id": item,
                "ts": ts,
                "minute": i % 90,
            }
            p.produce(watch_t, orjson.dumps(doc), user.encode())
            truth.ids["watch"].add(doc["event_id"])
            truth.user[user]["n_watch"] += 1
            truth.item[item]["n_watch"] += 1
        else:
            r = rng.randrange(1, 11) / 2
            doc = {
                "event_type": "rate",
                "event_id": f"e{i}",
                "user_id": user,
                "item_id": item,
                "ts": ts,
                "rating": r,
            }
            p.produce(rate_t, orjson.dumps(doc), user.encode())
            truth.ids["rate"].add(doc["event_id"])
            for d in (truth.user[user], truth.item[item]):
                d["n_rate"] += 1
                d["rating_sum"] += r
        truth.pop_all[item] += 1
        for g in genres[item]:
            truth.genres[user][g] += 1
        if i % 20_000 == 0:
            p.poll(0)
    p.flush(120)


def child_env(s: Settings, **extra: str) -> dict[str, str]:
    """This process's environment without its ``STREAMREC_*`` variables, plus the stack of
    ``s`` (brokers, prefixes, Redis, storage) and ``extra``: a child process of a test then
    reads the test's own topics and keys, whatever the developer's shell exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(
        STREAMREC_TOPIC_PREFIX=s.kafka.topic_prefix,
        STREAMREC_REDIS_KEY_PREFIX=s.redis.key_prefix,
        STREAMREC_STORAGE_URL=s.storage.location,
        STREAMREC_REDIS_URL=s.redis.url,
        STREAMREC_KAFKA_BOOTSTRAP=s.kafka.bootstrap,
    )
    env.update(extra)
    return env


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    env = child_env(s)
    env.update(
        STREAMREC_STREAM_FLUSH_INTERVAL_S="2",
        STREAMREC_STREAM_FLUSH_EVENTS="5000",
        STREAMREC_STREAM_SESSION_TIMEOUT_MS="6000",
        STREAMREC_STREAM_RETRY_MAX_S="1",
    )
    env.update(extra)
    return env


class WorkerProc(subprocess.Popen):
    """A worker process that knows its log, so a test that sees it die can say why."""

    log: Path


def start_worker(s: Settings, log: Path, **extra: str) -> WorkerProc:
    proc = WorkerProc(
        [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
        env=worker_env(s, **extra),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    proc.log = log
    return proc


def assert_running(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            continue
        log = getattr(p, "log", None)
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else "(no log)"
        raise AssertionError(f"worker exited with {p.returncode}; its log ends:\n{tail}")


def committed_vs_end(s: Settings) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) over the event topics. Retried while
    a partition's leadership moves (a broker died or came back on a cluster)."""
    deadline = time.monotonic() + 60
    while True:
        c = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": group_id(s)})
        try:
            tps = [TopicPartition(s.topic(t), p) for t in EVENT_TOPICS for p in range(4)]
            committed = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
            end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
            return committed, end
        except KafkaException:
            if time.monotonic() > deadline:  # e.g. OFFSET_NOT_AVAILABLE while leaders move
                raise
            time.sleep(0.5)
        finally:
            c.close()


def kill_mid_stream(
    s: Settings,
    truth: Truth,
    genres: dict,
    proc: subprocess.Popen,
    rng: random.Random,
    *,
    start: int,
    chunk: int,
    tries: int = 6,
) -> int:
    """Produce ``chunk`` events (ids from ``start``) and SIGKILL the worker at a random moment
    while it still has uncommitted input; returns how many events were produced.

    On a fast machine the worker can drain a chunk before the kill lands, which would make
    the kill test nothing; then another chunk goes in and the moment is drawn again."""
    produced = 0
    for _ in range(tries):
        produce_events(s, truth, genres, chunk, start=start + produced, bad_every=997)
        produced += chunk
        time.sleep(rng.uniform(0.05, 0.6))
        committed, end = committed_vs_end(s)
        if committed < end:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return produced
    raise AssertionError(f"the worker caught up before every one of {tries} kill attempts")


def wait_caught_up(s: Settings, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed, end = committed_vs_end(s)
        if committed == end:
            return
        assert_running(procs)
        time.sleep(1)
    raise AssertionError(f"not caught up after {timeout} s: committed {committed} of {end}")


def wait_for_log(
    log: Path, text: str, *, count: int, procs: list[subprocess.Popen], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= count:
            return
        assert_running(procs)
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged {count} times in {timeout} s")


def verify(s: Settings, truth: Truth, genres_checked: bool = True) -> None:
    store = open_store(s.storage)
    for etype in ("watch", "rate"):
        table = read_snapshots(store, etype)
        ids = table.column("event_id").to_pylist() if table is not None else []
        assert len(ids) == len(set(ids)), f"{etype}: {len(ids) - len(set(ids))} duplicates"
        assert set(ids) == truth.ids[etype], f"{etype}: missing {len(truth.ids[etype] - set(ids))}"
    r = connect(s.redis.url, cluster=s.redis.cluster, decode_responses=True)
    keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
    pipe = r.pipeline()
    users = sorted(truth.user)
    # Where serving looks: the slot of the user's murmur2 partition (schemas.redis_keys).
    for u in users:
        pipe.hgetall(keys.user_slot(u).user_stats(u))
    for u, stats in zip(users, pipe.execute(), strict=True):
        want = truth.user[u]
        assert int(stats.get("n_watch", 0)) == want["n_watch"], u
        assert int(stats.get("n_rate", 0)) == want["n_rate"], u
        assert float(stats.get("rating_sum", 0)) == pytest.approx(want["rating_sum"]), u
    for item, want in truth.item.items():
        stats = item_stats(r, keys, item)
        assert int(stats.get("n_watch", 0)) == want["n_watch"], item
        assert int(stats.get("n_rate", 0)) == want["n_rate"], item
    assert {k: int(v) for k, v in pop_all(r, keys).items()} == dict(truth.pop_all)
    if genres_checked:
        for u in users[:200]:
            got = {k: int(v) for k, v in r.hgetall(keys.user_slot(u).user_genres(u)).items()}
            assert got == dict(truth.genres[u]), u
    assert r.ttl(keys.user_slot(users[0]).user_stats(users[0])) > 24 * 3600  # outlives a day


def read_dead_letters(s: Settings) -> list[DeadLetter]:
    c = Consumer(
        {
            "bootstrap.servers": s.kafka.bootstrap,
            "group.id": "dl-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(s.topic(DEAD_LETTER), 0, 0)])
    out = []
    while msgs := c.consume(1000, 3.0):
        out.extend(DeadLetter.from_message(m.value(), m.key(), m.headers()) for m in msgs)
    c.close()
    return out


BIG_LIMIT = "3000000"  # the reproduction: a topic and a producer raised to 3 MB


def create_topics(s: Settings, **configs: dict[str, str]) -> None:
    """Create the named topics (logical names) with their configs, then the rest as usual."""
    admin = AdminClient({"bootstrap.servers": s.kafka.bootstrap})
    new = [
        NewTopic(
            s.topic(name),
            num_partitions=1 if name == DEAD_LETTER else s.kafka.topic_partitions,
            replication_factor=1,
            config=cfg,
        )
        for name, cfg in configs.items()
    ]
    for fut in admin.create_topics(new, request_timeout=30).values():
        fut.result()
    ensure_topics(s.kafka)


def watch_doc(i: int, user: str, item: str = "m1") -> bytes:
    return orjson.dumps(
        {"event_type": "watch", "event_id": f"e{i}", "user_id": user, "item_id": item, "ts": TS}
    )


def produce(s: Settings, records: list[tuple[str, bytes | None, bytes | None]]) -> list:
    """(logical topic, key, value) in order, with a producer raised to 3 MB records; returns
    the (partition, offset) of each."""
    conf = {"message.max.bytes": int(BIG_LIMIT), "delivery.report.only.error": False}
    p = Producer(producer_config(s.kafka, **conf))
    where: list = [None] * len(records)

    def report(i: int):
        def cb(err, msg) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())

        return cb

    for i, (topic, key, value) in enumerate(records):
        p.produce(s.topic(topic), value, key, on_delivery=report(i))
    assert p.flush(60) == 0
    return where


def start_in_thread(worker) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``worker`` on a daemon thread; what it raised lands in the returned list."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def run_caught_up(s: Settings, timeout: float = 120) -> None:
    """Run a confluent worker until it has caught up; fail (not hang) if it does not."""
    worker = create_app(s.with_sections(stream={"metrics_port": -1}), until_caught_up=True)
    t, errors = start_in_thread(worker)
    t.join(timeout)
    if t.is_alive():
        worker.stop()
        t.join(60)
        raise AssertionError(f"the worker did not catch up in {timeout} s: {worker.progress}")
    assert not errors, errors


T0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


TS = datetime(2024, 6, 1, 12, tzinfo=UTC).isoformat()


def start_redis_until_ping(cmd: list[str], port: int) -> subprocess.Popen:
    """Start a throwaway redis-server (``cmd``) and wait until it answers on ``port``; the
    outage tests start it again on the same data after taking it away."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return p
        except redis.ConnectionError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError("throwaway redis did not start")
