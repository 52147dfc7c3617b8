"""Code tests of docker-compose.yml and the Dockerfile. There is no Docker engine on the CI
machine, so the compose file is checked statically: it parses, every file it references
exists, host ports don't clash, every streamrec command parses with the real CLI parser,
every STREAMREC_* variable is a real setting, and health-gated dependencies make sense."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import KafkaSettings, RedisSettings, Settings, flat_names
from streamrec.cli import SUBCOMMANDS, build_parser
from streamrec.stack.cluster import client_env
from streamrec.stack.perses import PersesService

ROOT = Path(__file__).resolve().parent.parent
STACK = {
    "kafka",
    "redis",
    "minio",
    "minio-init",
    "prometheus",
    "alertmanager",
    "redis-exporter",
    "grafana",
    "perses",
}
APPS = {"topics", "stream", "api", "replay", "trainer", "rollout", "simulator"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _built() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _services().items() if "build" in svc}


def _bind_sources(svc: dict[str, Any]) -> list[str]:
    sources = []
    for vol in svc.get("volumes", []):
        sources.append(vol["source"] if isinstance(vol, dict) else vol.split(":")[0])
    return sources


def _host_ports(svc: dict[str, Any]) -> list[str]:
    ports = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            ports.append(str(port["published"]))
        else:
            parts = str(port).split(":")
            assert len(parts) == 2, f"{port!r}: publish as HOST:CONTAINER so clashes are visible"
            ports.append(parts[0])
    return ports


def test_compose_parses_and_has_the_whole_stack():
    services = _services()
    missing = (STACK | APPS) - set(services)
    assert not missing, missing
    assert set(_built()) == APPS, "every streamrec component runs from the project image"


def test_referenced_files_and_volumes_exist():
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in compose["services"].items():
        for source in _bind_sources(svc):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} undeclared"
                used.add(source)
        if "build" in svc:
            build = svc["build"]
            ctx, dockerfile = (
                (build, "Dockerfile")
                if isinstance(build, str)
                else (build["context"], build.get("dockerfile", "Dockerfile"))
            )
            assert (ROOT / ctx / dockerfile).is_file(), f"{name}: no {ctx}/{dockerfile}"
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_host_ports_do_not_clash_and_scaled_workers_publish_none():
    seen: dict[str, str] = {}
    for name, svc in _services().items():
        for host in _host_ports(svc):
            assert host not in seen, f"{name} and {seen[host]} both publish {host}"
            seen[host] = name
    # `--scale stream=N` would fail on the second replica if it published a host port.
    assert not _services()["stream"].get("ports")
    assert seen["8000"] == "api"


@pytest.mark.parametrize("name", sorted(APPS))
def test_service_commands_are_real_streamrec_subcommands(name):
    command = _built()[name]["command"]
    assert command[0] in SUBCOMMANDS, f"{name}: {command[0]} is not a streamrec subcommand"
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(command)
    except SystemExit:
        pytest.fail(f"{name}: `streamrec {' '.join(command)}` does not parse: {stderr.getvalue()}")
    assert args.command == command[0]
    assert callable(args.func)


def test_streamrec_variables_are_real_settings():
    fields = {f"STREAMREC_{name.upper()}" for name in flat_names()}
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\bSTREAMREC_[A-Z0-9_]+", text))
    assert used, "the apps get their configuration through STREAMREC_* settings"
    assert used <= fields, f"not settings: {sorted(used - fields)}"
    env = _built()["api"]["environment"]
    # The same storage settings for every component, pointing at the compose MinIO.
    assert env["STREAMREC_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["STREAMREC_STORAGE_URL"].startswith("s3://")
    assert all(svc["environment"] == env for svc in _built().values())


def test_dependencies_are_gated_on_health_or_completion():
    services = _services()
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}: no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is not one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition!r}")


def test_long_running_services_have_health_checks_and_restart():
    for name, svc in _services().items():
        one_shot = svc.get("restart", "no") == "no"
        if not one_shot:
            assert "healthcheck" in svc, f"{name}: long-running without a healthcheck"


def test_jobs_run_only_on_demand():
    services = _services()
    assert services["trainer"]["profiles"] == ["jobs"]
    assert services["replay"]["profiles"] == ["jobs"]
    assert "simulate" not in services  # lands with the canary issue (no subcommand yet)


def test_images_are_pinned():
    for name, svc in _services().items():
        image = svc.get("image")
        if image is None or "build" in svc:
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: pin {image}"


def test_prometheus_scrapes_the_compose_services():
    compose = _services()
    mount = next(s for s in _bind_sources(compose["prometheus"]) if s.endswith("prometheus.yml"))
    config = yaml.safe_load((ROOT / mount).read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[job["job_name"]] = target
        for sd in job.get("dns_sd_configs", []):
            targets[job["job_name"]] = f"{sd['names'][0]}:{sd['port']}"
    assert targets["streamrec-api"] == "api:8000"
    api_port = _built()["api"]["command"][_built()["api"]["command"].index("--port") + 1]
    assert api_port == "8000"
    # dns_sd: one target per `--scale` replica, on the worker's metrics port.
    metrics_port = _built()["stream"]["environment"]["STREAMREC_STREAM_METRICS_PORT"]
    assert targets["streamrec-stream"] == f"stream:{metrics_port}"
    env = _built()["rollout"]["environment"]
    assert targets["streamrec-rollout"] == f"rollout:{env['STREAMREC_ROLLOUT_METRICS_PORT']}"
    # 127.0.0.1 would be unreachable from the Prometheus container.
    assert env["STREAMREC_ROLLOUT_METRICS_HOST"] == "0.0.0.0"
    assert _built()["stream"]["environment"]["STREAMREC_STREAM_METRICS_HOST"] == "0.0.0.0"
    assert _built()["rollout"]["command"][:2] == ["rollout", "run"]
    for job, target in targets.items():
        host = target.split(":")[0]
        assert host in compose or host == "localhost", f"{job}: {host} is not a service"


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the bind mounts."""
    out = {}
    for vol in svc.get("volumes", []):
        if isinstance(vol, str) and vol.startswith((".", "/")):
            src, dst, *_ = vol.split(":")
            out[dst] = src
    return out


def test_prometheus_loads_the_alert_rules_of_the_native_stack():
    prom = _services()["prometheus"]
    mounts = _mounts(prom)
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    config = yaml.safe_load((ROOT / mounts[config_path]).read_text())
    # rule_files are relative to the config file's directory, inside the container.
    config_dir = config_path.rsplit("/", 1)[0]
    rules = []
    for pattern in config["rule_files"]:
        container_glob = f"{config_dir}/{pattern}"
        rule_dir, glob = container_glob.rsplit("/", 1)
        assert rule_dir in mounts, f"{container_glob}: {rule_dir} is not mounted"
        assert mounts[rule_dir] == "./infra/prometheus/rules"
        rules += sorted((ROOT / mounts[rule_dir]).glob(glob))
    alerts = {
        r["alert"]
        for path in rules
        for group in yaml.safe_load(path.read_text())["groups"]
        for r in group["rules"]
        if "alert" in r
    }
    assert {"StreamrecApiFallbackRatioHigh", "StreamrecModelRolledBack"} <= alerts


def test_redis_exporter_watches_the_redis_service_and_is_scraped():
    services = _services()
    exporter = services["redis-exporter"]
    assert exporter["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    mounts = _mounts(services["prometheus"])
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "redis"]
    assert job["static_configs"][0]["targets"] == ["redis-exporter:9121"]
    # The Streams dashboard's Redis panels query the exporter's metric names.
    streams = (ROOT / "infra" / "grafana" / "dashboards" / "streamrec-streams.json").read_text()
    assert "redis_memory_used_bytes" in streams


def test_grafana_is_provisioned_with_the_prometheus_data_source():
    grafana = _services()["grafana"]
    prov = next(s for s in _bind_sources(grafana) if s.endswith("provisioning"))
    sources = yaml.safe_load((ROOT / prov / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / prov / "dashboards" / "streamrec.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = [v.split(":") for v in grafana["volumes"] if isinstance(v, str)]
    assert any(target == path for _src, target, *_ in mounts), f"{path} is not mounted"


def test_perses_is_provisioned_like_the_native_stack():
    """The compose Perses gets what `stack up --service perses` provisions (the project, the
    Prometheus datasource, pointed at the compose service) and mounts every folder its
    config provisions from and the config itself where the image reads it."""
    perses = _services()["perses"]
    mounts = {target: src for src, target, *_ in (v.split(":") for v in perses["volumes"])}
    config = yaml.safe_load((ROOT / mounts["/etc/perses/config.yaml"]).read_text())
    folders = config["provisioning"]["folders"]
    assert all(folder in mounts for folder in folders), folders
    assert mounts[folders[-1]] == "./infra/perses/dashboards"
    resources = json.loads((ROOT / mounts[folders[0]] / "streamrec.json").read_text())
    native = PersesService(
        Settings().with_sections(observability={"prometheus_port": 9090})
    ).resources()
    text = json.dumps(native).replace("http://127.0.0.1:9090", "http://prometheus:9090")
    assert resources == json.loads(text)


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them():
    text = (ROOT / "Dockerfile").read_text()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = ["pyproject.toml", "requirements.lock", "README.md", "infra"]
    # Every package the distribution ships (pyproject's include list) must be in the image.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert "rollout" in packages and "streamrec" in packages
    for pkg in packages:
        assert f"COPY {pkg} {pkg}" in text, f"Dockerfile does not copy package {pkg}"
        copied.append(pkg)
    for path in copied:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path
    assert "USER streamrec" in text, "the image must not run as root"
    assert 'ENTRYPOINT ["streamrec"]' in text


def _cluster_switch() -> set[str]:
    """The settings the header comment lists as switching the apps to a cluster."""
    text = (ROOT / "docker-compose.yml").read_text()
    return set(re.findall(r"^#   (STREAMREC_[A-Z0-9_]+) ", text, flags=re.MULTILINE))


def test_default_stack_is_single_node_and_documents_the_cluster_switch():
    """The compose stack stays one broker + one Redis; its header names every setting the
    clustered stack gives its clients (streamrec.stack.cluster.client_env), plus the
    partition count a cluster needs."""
    env = _built()["api"]["environment"]
    assert env["STREAMREC_REDIS_URL"] == "redis://redis:6379/0"
    assert env["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:19092"
    # Left unset, so the single-node defaults hold: no cluster protocol, no WAIT, RF 1.
    for name in ("redis_cluster", "redis_min_replicas_ack", "topic_replication_factor"):
        assert f"STREAMREC_{name.upper()}" not in env, name
    assert RedisSettings.model_fields["cluster"].default is False
    assert RedisSettings.model_fields["min_replicas_ack"].default == 0
    assert KafkaSettings.model_fields["topic_replication_factor"].default == 1
    assert set(client_env(Settings())) | {"STREAMREC_TOPIC_PARTITIONS"} == _cluster_switch()


def test_alertmanager_has_the_native_routing_and_prometheus_sends_to_it():
    services = _services()
    manager = services["alertmanager"]
    # The version of Debian 12's prometheus-alertmanager, which the native stack runs.
    assert manager["image"] == "prom/alertmanager:v0.25.0"
    mounts = _mounts(manager)
    config_arg = next(a for a in manager["command"] if a.startswith("--config.file="))
    assert mounts[config_arg.split("=", 1)[1]] == "./infra/alertmanager/alertmanager.yml"
    listen = next(a for a in manager["command"] if a.startswith("--web.listen-address="))
    port = listen.rsplit(":", 1)[1]
    assert f"{port}:{port}" in manager["ports"]
    assert "--cluster.listen-address=" in manager["command"]
    prom = yaml.safe_load(
        (ROOT / _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]).read_text()
    )
    (target,) = [
        t
        for am in prom["alerting"]["alertmanagers"]
        for static in am["static_configs"]
        for t in static["targets"]
    ]
    assert target == f"alertmanager:{port}"
