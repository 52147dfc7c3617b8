"""Code tests: docker-compose.yml parses and references only files that exist (there is no
Docker engine here, so the compose file is checked statically)."""

from __future__ import annotations

from pathlib import Path

import yaml

from streamrec.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_parses_and_has_the_stack():
    services = _compose()["services"]
    for name in ("kafka", "redis", "minio", "prometheus", "api", "stream"):
        assert name in services, name


def test_referenced_files_exist():
    compose = _compose()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: volume {source} undeclared"
        if "build" in svc:
            ctx = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / ctx / "Dockerfile").exists()


def test_services_run_real_subcommands_and_ports_do_not_clash():
    seen: dict[str, str] = {}
    for name, svc in _compose()["services"].items():
        if "build" in svc:
            assert svc["command"][0] in SUBCOMMANDS, f"{name}: {svc['command'][0]}"
        for port in svc.get("ports", []):
            host = str(port).split(":")[0]
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name


def test_dockerfile_copies_every_package():
    text = (ROOT / "Dockerfile").read_text()
    for pkg in (
        "schemas",
        "core",
        "ingest",
        "models",
        "streams",
        "training",
        "serving",
        "streamrec",
    ):
        assert f"COPY {pkg} {pkg}" in text
