"""The two stream engines never share a consumer group: the broker refuses a worker of the
other engine (different group protocols) and that worker stops with one clear error. And the
Faust engine's outage test (the confluent engine's are in test_streams_integration)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.config import Settings
from streams.app import create_app
from streams.errors import EngineConflict
from streams.parts import Worker
from tests.support.ports import free_port
from tests.support.stream_worker import (
    Truth,
    committed_vs_end,
    produce_catalog,
    produce_events,
    start_in_thread,
    start_redis_until_ping,
    start_worker,
    verify,
    wait_caught_up,
    wait_for_log,
    worker_env,
)

pytestmark = pytest.mark.integration


def _start(s: Settings, engine: str) -> tuple[Worker, threading.Thread, list[BaseException]]:
    worker = create_app(s, engine=engine)
    thread, errors = start_in_thread(worker)
    return worker, thread, errors


@pytest.mark.parametrize(("first", "second"), [("confluent", "faust"), ("faust", "confluent")])
def test_a_worker_of_the_other_engine_is_refused(topics: Settings, first: str, second: str):
    owner, owner_thread, owner_errors = _start(topics, first)
    try:
        deadline = time.monotonic() + 60
        while owner.progress.assigned == 0:
            assert time.monotonic() < deadline and not owner_errors, owner_errors
            time.sleep(0.05)
        if second == "faust":
            # The command as a user runs it: one line of error and a non-zero exit, no
            # traceback of Faust's (its agent logged one when refused while starting).
            done = subprocess.run(
                [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
                env=worker_env(topics, STREAMREC_STREAM_ENGINE="faust"),
                capture_output=True,
                text=True,
                timeout=120,
                cwd=Path(__file__).resolve().parents[1],
            )
            output = done.stdout + done.stderr
            assert done.returncode != 0 and "Traceback" not in output, output[-3000:]
            errors_ = [line for line in done.stderr.splitlines() if "error" in line]
            assert len(errors_) == 1, done.stderr[-3000:]
            message = errors_[0]
        else:
            newcomer, thread, errors = _start(topics, second)
            thread.join(60)
            if thread.is_alive():
                newcomer.stop()
            assert len(errors) == 1 and isinstance(errors[0], EngineConflict), errors
            message = str(errors[0])
        assert "\n" not in message and f"workers of the {first} engine" in message
        assert owner.progress.assigned == 20 and not owner_errors  # the owner keeps them all
    finally:
        owner.stop()
        owner_thread.join(30)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_faust_engine_holds_commits_through_redis_and_storage_outages(
    topics: Settings, tmp_path: Path
) -> None:
    """The confluent engine's outage tests (test_streams_integration), for the Faust engine
    in one run with a small replay: Redis goes away, then the store; nothing is committed
    while either is away, the worker keeps its group and catches up exactly once."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]

    def start_redis() -> subprocess.Popen:
        return start_redis_until_ping(cmd, port)

    s = topics.with_sections(redis={"url": f"redis://127.0.0.1:{port}/0"})
    root = Path(s.storage.location.removeprefix("file://"))
    away = root.with_name("storage-away")
    rds = start_redis()
    truth = Truth()
    genres = produce_catalog(s, 100)
    log = tmp_path / "w.log"
    worker = start_worker(s, log, STREAMREC_STREAM_ENGINE="faust")
    try:
        produce_events(s, truth, genres, 2_000)
        wait_caught_up(s, 90, [worker])
        before, _ = committed_vs_end(s)
        rds.send_signal(signal.SIGTERM)  # graceful: the AOF keeps what was applied
        rds.wait()
        produce_events(s, truth, genres, 1_000, start=2_000)
        wait_for_log(log, "redis unavailable", count=1, procs=[worker])
        during, end = committed_vs_end(s)
        assert during == before < end  # nothing committed while Redis is away
        rds = start_redis()
        wait_caught_up(s, 90, [worker])
        before, _ = committed_vs_end(s)
        root.rename(away)  # a plain file where the store's root was: every put fails
        root.write_bytes(b"not a directory")
        produce_events(s, truth, genres, 1_000, start=3_000)
        wait_for_log(log, "storage unavailable", count=1, procs=[worker])
        during, end = committed_vs_end(s)
        assert during == before < end  # nothing committed while the store is away
        root.unlink()
        away.rename(root)
        wait_caught_up(s, 90, [worker])
        verify(s, truth)
    finally:
        worker.kill()
        worker.wait()
        rds.kill()
        rds.wait()
        if away.exists() and not root.is_dir():
            root.unlink(missing_ok=True)
            away.rename(root)
