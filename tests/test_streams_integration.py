"""Integration tests of the stream worker on the real broker and Redis: dead letters,
exactly-once under kill -9, takeover by a surviving worker, and a Redis outage."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.config import Settings
from tests.support.stream_worker import (
    Truth,
    assert_running,
    committed_vs_end,
    kill_mid_stream,
    produce_catalog,
    produce_events,
    read_dead_letters,
    start_redis_until_ping,
    start_worker,
    verify,
    wait_caught_up,
    wait_for_log,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_dead_letters_keep_bytes_reason_and_source(topics: Settings, engine: str) -> None:
    from streams import run_worker

    s = topics.with_sections(stream={"flush_interval_s": 1.0, "engine": engine})
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
        return start_redis_until_ping(cmd, port)

    s = topics.with_sections(redis={"url": f"redis://127.0.0.1:{port}/0"})
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
        assert_running([worker])  # still alive, retrying
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
        assert_running([worker])  # still alive, retrying
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
