"""Shared fixtures. Integration tests run against the REAL local stack (Kafka + Redis),
which the session brings up on demand with ``streamrec stack up`` (idempotent).

Every test gets its own topic prefix, Redis key prefix and storage directory, so tests
(and several engineers) can share one broker and one Redis without seeing each other."""

from __future__ import annotations

import contextlib
import fcntl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from tests.support.alerting import alertmanager_bins, webhook  # noqa: F401 (alerting tests)
from tests.support.cluster import on_cluster  # noqa: F401 (per-test, on cluster_stack)
from tests.support.s3 import minio, s3_settings, s3_storage  # noqa: F401 (fixtures on MinIO)


def _base_settings() -> Settings:
    # Environment first (CI may point at other ports), then the defaults.
    return Settings()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-skips",
        action="store_true",
        help="fail the run when any test skipped (make test: a skipped integration test is a "
        "failed one, so every service a test needs must be installed and started)",
    )


_SKIPPED: list[str] = []


@contextlib.contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    lock = Path(_base_settings().data_path) / "run" / name
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cluster_tests_lock() -> contextlib.AbstractContextManager[None]:
    """Tests on the clustered stack kill and restart its brokers and Redis masters, and check
    the cluster whole between steps; `make test` runs two pytest processes (pytest-xdist), so
    each such test, and each process's first `up` of the cluster, holds this lock, and no two
    of them meet on the shared cluster. (xdist's `--dist loadgroup` did not group marked
    tests with pytest 9 here.)"""
    return _flock("cluster-tests.lock", fcntl.LOCK_EX)


@pytest.fixture(autouse=True)
def _test_locks(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``alone`` (it counts answers against a latency budget, which a test
    busy on the other core would decide) runs while no other test does: it holds the
    ``alone`` lock exclusively, every other test holds it shared. A turnstile makes the
    others queue behind a waiting ``alone`` test instead of starving it (flock prefers no
    one). Then cluster tests take turns on the shared cluster, their fixtures included."""
    with contextlib.ExitStack() as held:
        if request.node.get_closest_marker("alone"):
            held.enter_context(_flock("tests-turnstile.lock", fcntl.LOCK_EX))
            held.enter_context(_flock("tests-alone.lock", fcntl.LOCK_EX))
        else:
            with _flock("tests-turnstile.lock", fcntl.LOCK_EX):
                pass
            held.enter_context(_flock("tests-alone.lock", fcntl.LOCK_SH))
        if "cluster_stack" in request.fixturenames:
            held.enter_context(_cluster_tests_lock())
        yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED and session.config.getoption("--no-skips") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _SKIPPED and config.getoption("--no-skips"):
        terminalreporter.write_line(
            f"--no-skips: {len(_SKIPPED)} test(s) skipped, which fails this run: "
            + ", ".join(_SKIPPED[:10]),
            red=True,
        )


@pytest.fixture(scope="session")
def prometheus_bins() -> dict[str, str]:
    """Paths of prometheus, promtool and prometheus-redis-exporter, installed from the
    distribution's packages when missing (as ``stack up --service prometheus`` does), so the
    observability tests run on a fresh machine instead of skipping."""
    import shutil

    from streamrec.stack.prometheus import PrometheusService

    PrometheusService(_base_settings()).ensure_installed()
    found = {
        name: shutil.which(name) or f"/usr/bin/{name}"
        for name in ("prometheus", "promtool", "prometheus-redis-exporter")
    }
    missing = [name for name, path in found.items() if not Path(path).exists()]
    assert not missing, f"installing prometheus left these missing: {missing}"
    return found


@pytest.fixture(scope="session")
def perses_home() -> Path:
    """Where perses, percli and Perses' CUE schemas are installed: built from the Go module
    when missing (as ``stack up --service perses`` does; ~8 min cold on 2 cores, then
    cached under ~/.cache/streamrec), so the Perses tests run on a fresh machine."""
    from streamrec.stack.perses import PersesService

    perses = PersesService(_base_settings())
    perses.ensure_installed()
    return perses.home


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Ensure Kafka and Redis are up (starting them if needed) and return base settings."""
    from streamrec.stack import up

    base = _base_settings()
    up(base)
    return base


@pytest.fixture(scope="session")
def cluster_stack() -> Settings:
    """Ensure the clustered stack (3 KRaft brokers, a 6-node Redis Cluster; `stack up
    --topology cluster`) is up and whole, and return base settings pointed at it (replication
    factor 3, min ISR 2, the cluster flag), for tests to copy with their own prefixes.

    Started once per session and left running at its end, like the single-node stack: a cold
    start takes about a minute on 2 cores, a re-`up` of a running cluster a few seconds, and
    another engineer's session may be using it at the same moment. Tests that kill or stop
    nodes bring them back (`up` again) before they finish. Stop it with
    `streamrec stack down --topology cluster`."""
    from streamrec.stack import up
    from streamrec.stack.cluster import client_settings

    base = _base_settings()
    with _cluster_tests_lock():  # not while another process's test has a node down
        up(base, topology="cluster")
    return client_settings(base)


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Per-test settings on the real stack with unique topic/key prefixes and storage."""
    tag = uuid.uuid4().hex[:10]
    s = stack.with_sections(
        kafka={"topic_prefix": f"t{tag}"},
        redis={"key_prefix": f"t{tag}"},
        storage={"url": f"file://{tmp_path / 'storage'}"},
    )
    yield s
    try:  # topics of a throwaway prefix are deleted so the broker doesn't fill up
        from core.kafka import delete_topics

        delete_topics(s.kafka, timeout=10)
    except Exception:
        pass
    try:
        import redis

        r = redis.Redis.from_url(s.redis.url)
        keys = list(r.scan_iter(f"{s.redis.key_prefix}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.delete(*keys[i : i + 10_000])
    except Exception:
        pass


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """Settings whose event topics exist."""
    from core.kafka import ensure_topics

    ensure_topics(settings.kafka)
    return settings
