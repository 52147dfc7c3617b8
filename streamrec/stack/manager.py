"""``up``, ``down`` and ``status`` over the services of the local stack, in either topology:
``single`` (one broker, one Redis; the default) or ``cluster`` (see :mod:`.cluster`)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from core.config import Settings
from schemas.errors import ConfigError
from streamrec.stack import cluster
from streamrec.stack.alertmanager import AlertmanagerService
from streamrec.stack.apps import ApiService, StreamWorkerService
from streamrec.stack.base import Service, ServiceState, port_open
from streamrec.stack.errors import PortInUseError, StackError
from streamrec.stack.kafka import KafkaService
from streamrec.stack.minio import MinioService
from streamrec.stack.perses import PersesService
from streamrec.stack.prometheus import PrometheusService
from streamrec.stack.redis import RedisService

log = logging.getLogger(__name__)

# Start order; stop order is the reverse.
SERVICES: dict[str, type[Service]] = {
    "kafka": KafkaService,
    "redis": RedisService,
    "minio": MinioService,  # opt-in: `up --service minio` (built with `go install` once)
    # Opt-in too; before Prometheus, whose first alerts then find it.
    "alertmanager": AlertmanagerService,
    "prometheus": PrometheusService,
    # Opt-in (built from its Go module once); after Prometheus, which its datasource proxies.
    "perses": PersesService,
    # Our own processes, started by the demo (`up --service stream,api`); after the
    # servers they need, and stopped before them.
    "stream": StreamWorkerService,
    "api": ApiService,
}
DEFAULT_SERVICES: tuple[str, ...] = ("kafka", "redis")
# Third-party servers (what `up --all` starts); our own processes are started by name.
INFRA_SERVICES: tuple[str, ...] = (
    "kafka",
    "redis",
    "minio",
    "alertmanager",
    "prometheus",
    "perses",
)


def services(settings: Settings, names: Sequence[str] | None = None) -> list[Service]:
    """The named services (all of them for ``None``), in start order."""
    wanted = list(SERVICES) if names is None else list(names)
    unknown = sorted(set(wanted) - set(SERVICES))
    if unknown:
        raise ConfigError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    return [cls(settings) for name, cls in SERVICES.items() if name in wanted]


def _chosen(
    settings: Settings, names: Sequence[str] | None, topology: str | None, default: Sequence[str]
) -> list[Service]:
    """The services of ``topology`` (``settings.stack.topology`` if None), in start order.

    The topology only decides what ``kafka`` and ``redis`` are: one process each, or every
    node of the cluster (both by default). The other services (minio, prometheus, our own
    stream/api) are the same in both; on the cluster they are chosen by name only, so that
    ``down --topology cluster`` never stops what the single stack's users started."""
    topology = topology or settings.stack.topology
    if topology == "single":
        return services(settings, default if names is None else names)
    if topology != "cluster":
        raise ConfigError(f"unknown topology {topology!r}; known: single, cluster")
    wanted = list(cluster.GROUPS) if names is None else list(names)
    shared = [name for name in wanted if name not in cluster.GROUPS]
    return cluster.nodes(settings, [n for n in wanted if n in cluster.GROUPS]) + services(
        settings, shared
    )


def cluster_report(settings: Settings, names: Sequence[str] | None = None) -> cluster.ClusterReport:
    """``status`` of the cluster topology: each node with its role, the services named
    besides, one summary line per engine and every problem found."""
    wanted = list(cluster.GROUPS) if names is None else list(names)
    out = cluster.report(settings, [n for n in wanted if n in cluster.GROUPS])
    out.states += [
        svc.observe() for svc in services(settings, [n for n in wanted if n not in cluster.GROUPS])
    ]
    return out


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
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
    topology: str | None = None,
) -> list[ServiceState]:
    """Start the services that are not running; idempotent.

    A service already running from our pid file is left as is ("running"); a port that
    already answers as the service (e.g. a broker whose pid file was lost) is reused
    ("external"). Anything else on a port is a :class:`PortInUseError`, raised before
    anything is started. If a started service fails, everything this call started is
    stopped again, so a failed ``up`` leaves no half-started processes. On the cluster
    topology ``up`` returns once the Redis Cluster is formed and whole.
    """
    timeout = settings.stack.timeout_s if timeout is None else timeout
    chosen = _chosen(settings, names, topology, DEFAULT_SERVICES)
    is_cluster = (topology or settings.stack.topology) == "cluster"
    with _locked(settings):
        if is_cluster:
            cluster.preflight(chosen)
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
            if is_cluster:
                cluster.settle(settings, chosen, timeout)
        except (StackError, KeyboardInterrupt):
            _stop(started, parallel=is_cluster)
            raise
    return [states[svc.name] for svc in chosen]


def _stop(chosen: Sequence[Service], *, parallel: bool) -> dict[Service, int | None]:
    """Stop in reverse start order; the pid each stopped (None: nothing of ours ran).

    A cluster's nodes stop all at once: a broker's controlled shutdown needs a quorum of
    controllers, which stopping the brokers one by one takes away from the last ones."""
    if not parallel:
        return {svc: svc.stop() for svc in reversed(chosen)}
    with ThreadPoolExecutor(max(1, len(chosen))) as pool:
        return dict(zip(reversed(chosen), pool.map(Service.stop, reversed(chosen)), strict=True))


def down(
    settings: Settings, names: Sequence[str] | None = None, *, topology: str | None = None
) -> list[ServiceState]:
    """Stop the services whose pid files we wrote (all by default); leave anything else."""
    chosen = _chosen(settings, names, topology, list(SERVICES))
    results: dict[str, ServiceState] = {}
    with _locked(settings):
        pids = _stop(chosen, parallel=(topology or settings.stack.topology) == "cluster")
        for svc in reversed(chosen):
            pid = pids[svc]
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


def status(
    settings: Settings, names: Sequence[str] | None = None, *, topology: str | None = None
) -> list[ServiceState]:
    """The state of each service (all by default); read-only. On the cluster topology each
    node carries its role; :func:`cluster_report` adds the whole-cluster view."""
    if (topology or settings.stack.topology) == "cluster":
        return cluster_report(settings, names).states
    return [svc.observe() for svc in _chosen(settings, names, topology, list(SERVICES))]
