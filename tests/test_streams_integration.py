"""Integration tests of the stream worker on the real broker and Redis: dead letters,
exactly-once under kill -9, takeover by a surviving worker, and a Redis outage."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from core.config import Settings
from core.kafka import EventProducer
from core.redis import connect
from core.storage import open_store
from schemas.catalog import ItemRecord
from schemas.dead_letter import DeadLetter
from schemas.redis_keys import RedisKeys
from schemas.topics import DEAD_LETTER, EVENT_TOPICS
from streams.snapshots import read_snapshots
from streams.worker import group_id
from tests.redis_view import item_stats, pop_all

pytestmark = pytest.mark.integration

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "SciFi"]
T0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


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
    with EventProducer(s) as p:
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
    p = EventProducer(s)
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


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(
        STREAMREC_TOPIC_PREFIX=s.topic_prefix,
        STREAMREC_REDIS_KEY_PREFIX=s.redis_key_prefix,
        STREAMREC_STORAGE_URL=s.storage.location,
        STREAMREC_REDIS_URL=s.redis_url,
        STREAMREC_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        STREAMREC_STREAM_FLUSH_INTERVAL_S="2",
        STREAMREC_STREAM_FLUSH_EVENTS="5000",
        STREAMREC_STREAM_SESSION_TIMEOUT_MS="6000",
        STREAMREC_STREAM_RETRY_MAX_S="1",
    )
    env.update(extra)
    return env


def start_worker(s: Settings, log: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
        env=worker_env(s, **extra),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )


def committed_vs_end(s: Settings) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) over the event topics. Retried while
    a partition's leadership moves (a broker died or came back on a cluster)."""
    deadline = time.monotonic() + 60
    while True:
        c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": group_id(s)})
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
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        time.sleep(1)
    raise AssertionError(f"not caught up after {timeout} s: committed {committed} of {end}")


def wait_for_log(
    log: Path, text: str, *, count: int, procs: list[subprocess.Popen], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= count:
            return
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged {count} times in {timeout} s")


def verify(s: Settings, truth: Truth, genres_checked: bool = True) -> None:
    store = open_store(s.storage)
    for etype in ("watch", "rate"):
        table = read_snapshots(store, etype)
        ids = table.column("event_id").to_pylist() if table is not None else []
        assert len(ids) == len(set(ids)), f"{etype}: {len(ids) - len(set(ids))} duplicates"
        assert set(ids) == truth.ids[etype], f"{etype}: missing {len(truth.ids[etype] - set(ids))}"
    r = connect(s.redis_url, cluster=s.redis_cluster, decode_responses=True)
    keys = RedisKeys(s.redis_key_prefix, s.topic_partitions)
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
            "bootstrap.servers": s.kafka_bootstrap,
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


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_dead_letters_keep_bytes_reason_and_source(topics: Settings, engine: str) -> None:
    from streams import run_worker

    s = topics.model_copy(update={"stream_flush_interval_s": 1.0, "stream_engine": engine})
    truth = Truth()
    genres = produce_catalog(s, 50)
    produce_events(s, truth, genres, 2_000, bad_every=100)
    summary = run_worker(s, until_caught_up=True, metrics_port=-1, handle_signals=False)
    assert summary.processed == 2_000 - truth.bad
    assert summary.dead_lettered == truth.bad
    dead = read_dead_letters(s)
    assert len(dead) == truth.bad
    for d in dead:
        assert d.source_topic == s.topic("watch") and d.source_offset >= 0
        assert ("not valid JSON" in d.reason) or ("minute" in d.reason)
        assert d.value and (b"broken" in d.value or b'"minute":-1' in d.value)
    verify(s, truth)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "first", "more", "kills"),
    [
        ("confluent", 120_000, 90_000, 4),
        # Lighter: three kills cover the same paths, in less of the suite's time.
        ("faust", 40_000, 20_000, 3),
    ],
)
def test_kill_9_exactly_once(
    topics: Settings, tmp_path: Path, engine: str, first: int, more: int, kills: int
) -> None:
    s = topics
    truth = Truth()
    genres = produce_catalog(s, 500)
    produce_events(s, truth, genres, first, bad_every=997)
    log = tmp_path / "worker.log"
    rng = random.Random(42)
    proc = start_worker(s, log, STREAMREC_STREAM_ENGINE=engine)
    killed, produced = 0, first
    try:
        for round_ in range(kills):
            # Kill while it works: after it has its partitions, at a random moment.
            wait_for_log(log, "assigned", count=round_ + 1, procs=[proc])
            chunk = more // kills
            produced += kill_mid_stream(s, truth, genres, proc, rng, start=produced, chunk=chunk)
            killed += 1
            proc = start_worker(s, log, STREAMREC_STREAM_ENGINE=engine)
        wait_caught_up(s, 150, [proc])
    finally:
        proc.kill()
        proc.wait()
    assert killed == kills
    assert sum(len(v) for v in truth.ids.values()) >= (first + more) * 0.99
    verify(s, truth)
    assert len({d.source_offset for d in read_dead_letters(s)}) == truth.bad


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_two_workers_survivor_takes_over(topics: Settings, tmp_path: Path, engine: str) -> None:
    s = topics
    truth = Truth()
    genres = produce_catalog(s, 200)
    a = start_worker(s, tmp_path / "a.log", STREAMREC_STREAM_ENGINE=engine)
    b = start_worker(s, tmp_path / "b.log", STREAMREC_STREAM_ENGINE=engine)
    try:
        time.sleep(8)  # both in the group, partitions shared
        produce_events(s, truth, genres, 40_000)
        time.sleep(3)
        a.send_signal(signal.SIGKILL)
        a.wait()
        produce_events(s, truth, genres, 20_000, start=40_000)
        wait_caught_up(s, 120, [b])
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
    verify(s, truth)
    b_log = (tmp_path / "b.log").read_text()
    assert "assigned 20 partition(s)" in b_log.replace("\n", " "), b_log[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_outage_holds_commits_and_catches_up(topics: Settings, tmp_path: Path) -> None:
    port = 6390
    data = tmp_path / "redis"
    data.mkdir()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]

    def start_redis() -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return p
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("throwaway redis did not start")

    s = topics.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    rds = start_redis()
    truth = Truth()
    genres = produce_catalog(s, 100)
    worker = start_worker(s, tmp_path / "w.log")
    try:
        produce_events(s, truth, genres, 10_000)
        wait_caught_up(s, 90, [worker])
        before, _ = committed_vs_end(s)
        rds.send_signal(signal.SIGTERM)  # graceful: the AOF keeps what was applied
        rds.wait()
        produce_events(s, truth, genres, 10_000, start=10_000)
        time.sleep(8)
        during, end = committed_vs_end(s)
        assert during == before < end  # nothing committed while Redis is down
        assert worker.poll() is None  # still alive, retrying
        rds = start_redis()
        wait_caught_up(s, 90, [worker])
        verify(s, truth)
        assert "redis unavailable" in (tmp_path / "w.log").read_text()
    finally:
        worker.kill()
        worker.wait()
        rds.kill()
        rds.wait()


@pytest.mark.slow
def test_storage_outage_holds_commits_and_catches_up(topics: Settings, tmp_path: Path) -> None:
    # Running as root, a read-only directory would still be writable: the store's root is
    # replaced by a plain file instead, so every put fails as on a lost mount.
    root = Path(topics.storage.location.removeprefix("file://"))
    away = root.with_name("storage-away")
    truth = Truth()
    genres = produce_catalog(topics, 100)
    log = tmp_path / "w.log"
    worker = start_worker(topics, log)
    try:
        produce_events(topics, truth, genres, 10_000)
        wait_caught_up(topics, 90, [worker])
        before, _ = committed_vs_end(topics)
        root.rename(away)
        root.write_bytes(b"not a directory")
        produce_events(topics, truth, genres, 10_000, start=10_000)
        wait_for_log(log, "storage unavailable", count=1, procs=[worker])
        time.sleep(5)
        during, end = committed_vs_end(topics)
        assert during == before < end  # nothing committed while storage is down
        assert worker.poll() is None  # still alive, retrying
        root.unlink()
        away.rename(root)
        wait_caught_up(topics, 90, [worker])
        verify(topics, truth)  # every event in exactly one snapshot, Redis counts exact
        assert "storage is back" in log.read_text()
    finally:
        worker.kill()
        worker.wait()
        if away.exists() and not root.is_dir():
            root.unlink(missing_ok=True)
            away.rename(root)
