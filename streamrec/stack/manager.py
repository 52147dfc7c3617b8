"""``up``, ``down`` and ``status`` over the services of the local stack."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from core.config import Settings
from schemas.errors import ConfigError
from streamrec.stack.apps import ApiService, StreamWorkerService
from streamrec.stack.base import Service, ServiceState, port_open
from streamrec.stack.errors import PortInUseError, StackError
from streamrec.stack.kafka import KafkaService
from streamrec.stack.minio import MinioService
from streamrec.stack.prometheus import PrometheusService
from streamrec.stack.redis import RedisService

log = logging.getLogger(__name__)

# Start order; stop order is the reverse.
SERVICES: dict[str, type[Service]] = {
    "kafka": KafkaService,
    "redis": RedisService,
    "minio": MinioService,  # opt-in: `up --service minio` (built with `go install` once)
    "prometheus": PrometheusService,
    # Our own processes, started by the demo (`up --service stream,api`); after the
    # servers they need, and stopped before them.
    "stream": StreamWorkerService,
    "api": ApiService,
}
DEFAULT_SERVICES: tuple[str, ...] = ("kafka", "redis")
# Third-party servers (what `up --all` starts); our own processes are started by name.
INFRA_SERVICES: tuple[str, ...] = ("kafka", "redis", "minio", "prometheus")


def services(settings: Settings, names: Sequence[str] | None = None) -> list[Service]:
    """The named services (all of them for ``None``), in start order."""
    wanted = list(SERVICES) if names is None else list(names)
    unknown = sorted(set(wanted) - set(SERVICES))
    if unknown:
        raise ConfigError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    return [cls(settings) for name, cls in SERVICES.items() if name in wanted]


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialize up/down on one data dir: two concurrent `up`s must not start two brokers."""
    run_dir = settings.data_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(
    settings: Settings, names: Sequence[str] | None = None, *, timeout: float | None = None
) -> list[ServiceState]:
    """Start the services that are not running; idempotent.

    A service already running from our pid file is left as is ("running"); a port that
    already answers as the service (e.g. a broker whose pid file was lost) is reused
    ("external"). Anything else on a port is a :class:`PortInUseError`, raised before
    anything is started. If a started service fails, everything this call started is
    stopped again, so a failed ``up`` leaves no half-started processes.
    """
    timeout = settings.stack_timeout_s if timeout is None else timeout
    chosen = services(settings, DEFAULT_SERVICES if names is None else names)
    with _locked(settings):
        states: dict[str, ServiceState] = {}
        to_start: list[Service] = []
        for svc in chosen:
            pid = svc.pid()
            if pid is not None:
                states[svc.name] = ServiceState(svc.name, "running", svc.port, pid, svc.log_path)
                continue
            svc.pid_path.unlink(missing_ok=True)  # stale: its process is gone or not ours
            if port_open(svc.port):
                if not svc.probe():
                    raise PortInUseError(svc.name, svc.port)
                log.info(
                    "%s: already served on port %d (not started by streamrec); reusing it",
                    svc.name,
                    svc.port,
                )
                states[svc.name] = ServiceState(
                    svc.name, "external", svc.port, detail="not started by streamrec"
                )
                continue
            svc.ensure_installed()  # installs (apt, mvn) happen before any process starts
            to_start.append(svc)

        started: list[Service] = []
        try:
            for svc in to_start:
                log.info("%s: starting on port %d", svc.name, svc.port)
                svc.start()
                started.append(svc)
            # Waiting after all starts lets Redis come up while the JVM boots.
            for svc in started:
                svc.wait_ready(timeout)
                states[svc.name] = ServiceState(
                    svc.name, "started", svc.port, svc.pid(), svc.log_path
                )
        except (StackError, KeyboardInterrupt):
            for svc in reversed(started):
                svc.stop()
            raise
    return [states[svc.name] for svc in chosen]


def down(settings: Settings, names: Sequence[str] | None = None) -> list[ServiceState]:
    """Stop the services whose pid files we wrote (all by default); leave anything else."""
    chosen = services(settings, names)
    results: dict[str, ServiceState] = {}
    with _locked(settings):
        for svc in reversed(chosen):
            pid = svc.stop()
            if pid is not None:
                results[svc.name] = ServiceState(svc.name, "stopped", svc.port, pid, svc.log_path)
            elif port_open(svc.port):
                results[svc.name] = ServiceState(
                    svc.name, "external", svc.port, detail="not started by streamrec; left running"
                )
            else:
                results[svc.name] = ServiceState(
                    svc.name, "stopped", svc.port, detail="was not running"
                )
    return [results[svc.name] for svc in chosen]


def status(settings: Settings, names: Sequence[str] | None = None) -> list[ServiceState]:
    """The state of each service (all by default); read-only."""
    return [svc.observe() for svc in services(settings, names)]
