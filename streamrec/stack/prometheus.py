"""Prometheus (the Debian package's binary, our own process), opt-in: ``up --all`` or
``up --service prometheus``, with infra/prometheus/ as its configuration and alert rules.

The repo's prometheus.yml names every job with its default port; :func:`render_config`
turns it into the running configuration by taking each port from the settings (so a stack
on other ports is scraped where it really is). A Redis exporter (Debian package
``prometheus-redis-exporter``) runs beside Prometheus as part of this service, because Redis
itself exposes nothing Prometheus can read.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any

from streamrec.stack.base import Service, host_port_from_url, port_open
from streamrec.stack.install import ensure_apt_package

# job_name in infra/prometheus/prometheus.yml -> the setting holding its port (section.field).
JOB_PORTS: dict[str, str] = {
    "streamrec-api": "serve.port",
    "streamrec-stream": "stream.metrics_port",
    "streamrec-rollout": "rollout.metrics_port",
    "kafka": "kafka.jmx_exporter_port",
    "redis": "observability.redis_exporter_port",
    "prometheus": "observability.prometheus_port",
}

# Used only when infra/prometheus/prometheus.yml does not exist (an installed copy without
# the repo): scrape ourselves and the broker's JMX exporter.
_FALLBACK_CONFIG: dict[str, Any] = {
    "global": {"scrape_interval": "15s"},
    "scrape_configs": [
        {"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]},
        {"job_name": "kafka", "static_configs": [{"targets": ["127.0.0.1:9404"]}]},
    ],
}


def _with_port(target: str, port: int) -> str:
    host = target.rsplit(":", 1)[0]
    return f"{host}:{port}"


def render_config(
    source: Path | None,
    ports: Mapping[str, int],
    *,
    interval_s: float | None = None,
    alertmanager_port: int | None = None,
) -> dict[str, Any]:
    """The configuration of ``source`` (a prometheus.yml; None: a minimal fallback) with the
    targets of each job in ``ports`` moved to that port (a port <= 0 drops the job's
    targets: nothing to scrape), rule files as absolute paths and, if given, the scrape and
    evaluation intervals replaced (tests use 1 s) and the Alertmanager targets moved to
    ``alertmanager_port``."""
    import yaml  # PyYAML comes with uvicorn[standard]; only `stack up` needs it

    if source is None:
        config: dict[str, Any] = json.loads(json.dumps(_FALLBACK_CONFIG))
        base = Path.cwd()
    else:
        config = yaml.safe_load(source.read_text())
        base = source.parent
    if interval_s is not None:
        config.setdefault("global", {})
        config["global"]["scrape_interval"] = f"{interval_s:g}s"
        config["global"]["evaluation_interval"] = f"{interval_s:g}s"
    # Prometheus resolves rule globs against the config file's directory; the rendered copy
    # lives elsewhere, so make them absolute.
    config["rule_files"] = [str((base / p).resolve()) for p in config.get("rule_files") or []]
    for job in config.get("scrape_configs", []):
        port = ports.get(job["job_name"])
        if port is None:
            continue
        for static in job.get("static_configs", []):
            targets = static.get("targets", [])
            static["targets"] = [_with_port(t, port) for t in targets] if port > 0 else []
    if alertmanager_port is not None:
        for manager in (config.get("alerting") or {}).get("alertmanagers", []):
            for static in manager.get("static_configs", []):
                static["targets"] = [_with_port(t, alertmanager_port) for t in static["targets"]]
    return config


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write ``config`` as JSON, which is YAML too (no dumper needed, no YAML quirks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _ready(url: str, needle: bytes, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200 and needle in resp.read(4096)
    except OSError:
        return False


class RedisExporterService(Service):
    """``prometheus-redis-exporter`` reading ``settings.redis.url``; started and stopped
    with Prometheus (see :class:`PrometheusService`), not a stack service of its own."""

    name = "redis-exporter"
    marker = "prometheus-redis-exporter"

    @property
    def port(self) -> int:
        return self.settings.observability.redis_exporter_port

    def ensure_installed(self) -> None:
        self._binary()

    def _binary(self) -> str:
        return ensure_apt_package(
            "prometheus",
            "prometheus-redis-exporter",
            "prometheus-redis-exporter",
            elsewhere="brew install redis_exporter, or a release of oliver006/redis_exporter",
            packaged_units=("prometheus-redis-exporter",),
        )

    def command(self) -> list[str]:
        host, port = host_port_from_url(
            self.settings.redis.url, default_port=6379, setting="redis_url"
        )
        return [
            self._binary(),
            f"-redis.addr=redis://{host}:{port}",
            f"-web.listen-address=127.0.0.1:{self.port}",
        ]

    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        return _ready(f"http://127.0.0.1:{self.port}/", b"Redis Exporter", timeout)


class PrometheusService(Service):
    name = "prometheus"
    # Not just "prometheus": the broker's command line has jmx_prometheus_javaagent in it.
    marker = "prometheus --config.file"

    @property
    def port(self) -> int:
        return self.settings.observability.prometheus_port

    @property
    def source_config(self) -> Path | None:
        repo_config = self.settings.home / "infra" / "prometheus" / "prometheus.yml"
        return repo_config if repo_config.exists() else None

    @property
    def config_path(self) -> Path:
        return self.run_dir / "prometheus.yml"

    @property
    def exporter(self) -> RedisExporterService:
        return RedisExporterService(self.settings)

    def ports(self) -> dict[str, int]:
        return {job: int(attrgetter(field)(self.settings)) for job, field in JOB_PORTS.items()}

    def ensure_installed(self) -> None:
        self._binary()
        self.exporter.ensure_installed()

    def _binary(self) -> str:
        return ensure_apt_package(
            "prometheus",
            "prometheus",
            "prometheus",
            elsewhere="brew install prometheus, or a release from prometheus.io/download",
            # The package also enables node-exporter when recommends are on; we skip those.
            packaged_units=("prometheus", "prometheus-node-exporter"),
        )

    def prepare(self) -> None:
        (self.settings.data_path / "prometheus").mkdir(parents=True, exist_ok=True)
        config = render_config(
            self.source_config, self.ports(), alertmanager_port=self.settings.alertmanager.port
        )
        write_config(config, self.config_path)

    def command(self) -> list[str]:
        return [
            self._binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.settings.data_path / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # POST /-/reload after editing infra/prometheus and re-rendering (`stack up`).
            "--web.enable-lifecycle",
        ]

    # The exporter rides along: started first (Prometheus' first scrape finds it), stopped
    # last. One already answering on its port (another checkout's) is reused as is.
    def start(self) -> int:
        exporter = self.exporter
        ours = exporter.pid() is None and not exporter.probe()
        if ours:
            exporter.start()
        try:
            return super().start()
        except BaseException:
            if ours:  # `up` only cleans up what started; the exporter did not count
                exporter.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        super().wait_ready(timeout)
        if self.exporter.pid() is not None:
            self.exporter.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        pid = super().stop(timeout)
        self.exporter.stop(timeout)
        return pid

    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        # The body names Prometheus, which tells it apart from any other HTTP server.
        return _ready(f"http://127.0.0.1:{self.port}/-/ready", b"Prometheus", timeout)
