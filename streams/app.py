"""The stream app: a stream worker (:class:`streams.parts.Worker`) with its ``/metrics``
endpoint, run until stopped (SIGINT/SIGTERM) or, with ``until_caught_up``, until every
assigned partition has no lag and everything is committed. Nothing happens at import time."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.config import Settings
from streams.errors import StreamError
from streams.metrics import StreamMetrics
from streams.parts import Worker
from streams.worker import StreamWorker

log = logging.getLogger(__name__)


@dataclass
class Summary:
    processed: int
    dead_lettered: int
    files_written: int
    duplicates: int
    elapsed_s: float
    metrics_port: int | None


def create_app(
    settings: Settings, *, until_caught_up: bool = False, engine: str | None = None
) -> Worker:
    """A stream worker (not started) with its own metrics registry, on ``engine``
    (default ``settings.stream.engine``): "confluent" or "faust"."""
    engine = engine or settings.stream.engine
    if engine == "faust":
        from streams.faust_worker import FaustWorker  # faust is imported only when used

        return FaustWorker(settings, StreamMetrics(), until_caught_up=until_caught_up)
    if engine != "confluent":
        raise StreamError(f"unknown stream engine {engine!r} (confluent or faust)")
    return StreamWorker(settings, StreamMetrics(), until_caught_up=until_caught_up)


def serve_metrics(metrics: StreamMetrics, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``host``:``port`` (0: a free port) in a daemon thread; returns
    the port. Loopback by default: the metrics are no one else's business unless the
    deployment says so (``STREAMREC_STREAM_METRICS_HOST``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server.server_port


def run_worker(
    settings: Settings,
    *,
    until_caught_up: bool = False,
    metrics_port: int | None = None,
    on_tick: Callable[[Worker], None] | None = None,
    handle_signals: bool = True,
    engine: str | None = None,
) -> Summary:
    """Run one worker in this process. The consumer loop runs in a thread; this thread
    waits for it, calls ``on_tick`` about 4 times a second and turns SIGINT/SIGTERM into a
    graceful stop (flush, commit, leave the group)."""
    worker = create_app(settings, until_caught_up=until_caught_up, engine=engine)
    port = metrics_port if metrics_port is not None else settings.stream.metrics_port
    host = settings.stream.metrics_host
    bound = serve_metrics(worker.metrics, port, host) if port >= 0 else None
    if bound is not None:
        log.info("metrics on http://%s:%d/metrics", host, bound)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as err:
            errors.append(err)

    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: worker.stop())
    t0 = time.monotonic()
    thread = threading.Thread(target=target, name="stream-worker", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
        if on_tick is not None:
            on_tick(worker)
    if errors:
        raise errors[0]
    totals = worker.totals
    return Summary(
        processed=totals.processed,
        dead_lettered=totals.dead_lettered,
        files_written=totals.files_written,
        duplicates=totals.duplicates,
        elapsed_s=time.monotonic() - t0,
        metrics_port=bound,
    )
