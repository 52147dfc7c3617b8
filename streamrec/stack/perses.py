"""Perses, a dashboard server (CNCF, Apache-2.0) that loads our Grafana dashboards converted
with its Grafana migration, opt-in: ``up --service perses`` (or ``--all``).

Built from its Go module once (v0.49.0: the last release whose module still carries the CUE
schemas and the migration scripts) into ``<cache>/perses-v0.49.0/`` with the layout of the
upstream image: ``bin/perses``, ``bin/percli``, ``cue/schemas`` and ``cue.mod``. The module
has the UI's sources but not its built bundle, so the server embeds a placeholder page and
serves the API only. It runs on 127.0.0.1 with a file database in ``<data>/perses`` and
provisions a ``streamrec`` project, a Prometheus global datasource (a proxy to the local
Prometheus) and the converted dashboards of ``infra/perses/dashboards``.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from streamrec.stack.base import Service, port_open
from streamrec.stack.errors import InstallError, NotInstalledError, NotReadyError
from streamrec.stack.minio import find_go

log = logging.getLogger(__name__)

PERSES_MODULE = "github.com/perses/perses"
PERSES_VERSION = "v0.49.0"
PROJECT = "streamrec"
DATASOURCE = "prometheus"  # the GlobalDatasource our dashboards' queries use by default
SCHEMA_KINDS = ("panels", "queries", "datasources", "variables")
_BUILD_HEARTBEAT_S = 30.0
# `go install` of this version fails on the proxy's deprecation lookup, so the module is
# copied out of the module cache and built in place, with ui/ given a page to embed.
_UI_EMBED = "//go:embed app/dist/index.html.gz\nvar embedFS embed.FS\n"
_UI_PAGE = b"<html><body>Perses API only: this build has no UI bundle.</body></html>\n"


def _run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], out: Path) -> None:
    """Run a build step with its output appended to ``out``; a heartbeat every 30 s."""
    began = time.monotonic()
    with out.open("ab") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            next_beat = began + _BUILD_HEARTBEAT_S
            while proc.poll() is None:
                time.sleep(0.5)
                if time.monotonic() >= next_beat:
                    next_beat += _BUILD_HEARTBEAT_S
                    log.info("perses: still building (%.0f s)", time.monotonic() - began)
        except BaseException:  # Ctrl-C: no orphaned compiler left running
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise InstallError("perses", cmd, out.read_text(errors="replace"))


def _unsupported_variable(variable: dict[str, Any]) -> bool:
    """A variable the Grafana migration could not map (a static list of its placeholder)."""
    values = variable.get("spec", {}).get("plugin", {}).get("spec", {}).get("values")
    return values == ["grafana", "migration", "not", "supported"]


class PersesService(Service):
    name = "perses"
    marker = "perses --config"

    @property
    def port(self) -> int:
        return self.settings.observability.perses_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- paths -----------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """The installed release: bin/, cue/schemas/, cue.mod/ (as in the upstream image)."""
        return self.settings.cache_path / f"perses-{PERSES_VERSION}"

    @property
    def binary_path(self) -> Path:
        return self.home / "bin" / "perses"

    @property
    def percli_path(self) -> Path:
        return self.home / "bin" / "percli"

    def schema_path(self, kind: str) -> Path:
        return self.home / "cue" / "schemas" / kind

    @property
    def stamp_path(self) -> Path:
        """Written last by a complete build; its absence means "not installed"."""
        return self.home / "streamrec.version"

    @property
    def data_path(self) -> Path:
        return self.settings.data_path / "perses"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "perses.yaml"

    @property
    def provisioning_path(self) -> Path:
        return self.run_dir / "perses-provisioning"

    @property
    def dashboards_path(self) -> Path:
        """The converted dashboards we ship (``python infra/perses/generate.py``)."""
        return self.settings.home / "infra" / "perses" / "dashboards"

    @property
    def build_log_path(self) -> Path:
        return self.log_path.with_name("perses-build.log")

    # --- install ---------------------------------------------------------------------
    def installed(self) -> bool:
        try:
            stamp = self.stamp_path.read_text().strip()
        except OSError:
            return False
        return stamp == PERSES_VERSION and self.binary_path.is_file() and self.percli_path.is_file()

    def ensure_installed(self) -> None:
        if self.installed():
            return
        go = find_go()
        if go is None:
            raise NotInstalledError(
                "perses",
                "go",
                "install Go 1.22+ (https://go.dev/dl/); `stack up --service perses` then builds "
                f"Perses {PERSES_VERSION} from its Go module once (about 8 minutes on 2 cores)",
            )
        # Its own lock (not the stack lock): a test session may build while others run `up`;
        # two builders must not share the staging directory.
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with self.home.with_name(".perses-build.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self.installed():  # another process may have built it meanwhile
                    self.build(go)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(self, go: str) -> None:
        """Download the pinned module, build perses and percli, install them with the schemas."""
        staging = self.home.with_name(f".perses-{PERSES_VERSION}-build")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.build_log_path.parent.mkdir(parents=True, exist_ok=True)
        self.build_log_path.write_bytes(b"")
        go_cache = self.settings.cache_path / "go"
        env = {
            **os.environ,
            "CGO_ENABLED": "0",  # static binaries, no C toolchain (upstream builds them so)
            # Module and build caches inside <cache> (shared with the MinIO build), so a
            # rebuild is warm and deleting .cache/ removes every byte the build wrote.
            "GOMODCACHE": str(go_cache / "mod"),
            "GOCACHE": str(go_cache / "build"),
            "GOFLAGS": "-modcacherw",  # the read-only default makes rm -rf .cache fail
        }
        log.info(
            "perses: building Perses %s from its Go module (one-time, about 8 minutes on a "
            "cold Go cache); output in %s",
            PERSES_VERSION,
            self.build_log_path,
        )
        began = time.monotonic()
        module = f"{PERSES_MODULE}@{PERSES_VERSION}"
        download = [go, "mod", "download", "-json", module]
        result = subprocess.run(download, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError("perses", download, result.stdout + result.stderr)
        src = staging / "src"
        shutil.copytree(json.loads(result.stdout)["Dir"], src)
        for path in [src, *src.rglob("*")]:  # the module cache's files are read-only
            path.chmod(path.stat().st_mode | 0o200)
        ui = src / "ui"
        (ui / "embed.go").write_text((ui / "embed.go.tmpl").read_text() + _UI_EMBED)
        (ui / "app" / "dist").mkdir(parents=True, exist_ok=True)
        (ui / "app" / "dist" / "index.html.gz").write_bytes(gzip.compress(_UI_PAGE, mtime=0))
        out = staging / "out"
        for program in ("percli", "perses"):
            cmd = [go, "build", "-ldflags", "-s -w", "-o", str(out / "bin" / program)]
            _run_logged([*cmd, f"./cmd/{program}"], cwd=src, env=env, out=self.build_log_path)
        shutil.copytree(src / "cue" / "schemas", out / "cue" / "schemas")
        shutil.copytree(src / "cue.mod", out / "cue.mod")
        shutil.copy(src / "LICENSE", out / "LICENSE")
        (out / "streamrec.version").write_text(PERSES_VERSION + "\n")
        shutil.rmtree(self.home, ignore_errors=True)
        out.replace(self.home)
        shutil.rmtree(staging, ignore_errors=True)
        log.info("perses: built %s in %.0f s", self.home, time.monotonic() - began)

    # --- the Grafana migration -------------------------------------------------------
    def migrate(self, grafana_dashboard: Path) -> dict[str, Any]:
        """``percli migrate`` of one Grafana dashboard file, into the ``streamrec`` project."""
        self.ensure_installed()
        cmd = [str(self.percli_path), "migrate", "-f", str(grafana_dashboard)]
        for flag, kind in (
            ("charts", "panels"),
            ("queries", "queries"),
            ("variables", "variables"),
        ):
            cmd += [f"--schemas.{flag}", str(self.schema_path(kind))]
        cmd += ["--input", f"datasource={DATASOURCE}", "-o", "json"]
        # percli keeps a config file under $HOME; a private HOME keeps it out of the user's.
        env = {**os.environ, "HOME": str(self.settings.data_path / "percli")}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError("perses", cmd, result.stdout + result.stderr)
        board = json.loads(result.stdout)
        board["metadata"]["project"] = PROJECT
        # Grafana's data-source picker variable has no Perses counterpart: the migration makes
        # it a static list of the words "grafana migration not supported". Every query names
        # the `prometheus` datasource itself (--input above), so the variable is dropped.
        board["spec"]["variables"] = [
            v for v in board["spec"].get("variables", []) if not _unsupported_variable(v)
        ]
        return board

    # --- config ----------------------------------------------------------------------
    def resources(self) -> list[dict[str, Any]]:
        """The project and the Prometheus datasource its dashboards query (provisioned)."""
        prometheus = f"http://127.0.0.1:{self.settings.observability.prometheus_port}"
        return [
            {"kind": "Project", "metadata": {"name": PROJECT}, "spec": {}},
            {
                "kind": "GlobalDatasource",
                "metadata": {"name": DATASOURCE},
                "spec": {
                    "default": True,
                    "plugin": {
                        "kind": "PrometheusDatasource",
                        "spec": {"proxy": {"kind": "HTTPProxy", "spec": {"url": prometheus}}},
                    },
                },
            },
        ]

    def config(self) -> dict[str, Any]:
        folders = [str(self.provisioning_path)]
        if self.dashboards_path.is_dir():  # absent in an installed copy without the repo
            folders.append(str(self.dashboards_path))
        return {
            "database": {"file": {"folder": str(self.data_path / "db"), "extension": "json"}},
            "schemas": {f"{kind}_path": str(self.schema_path(kind)) for kind in SCHEMA_KINDS},
            # Folders are applied in order: the project exists before its dashboards.
            "provisioning": {"folders": folders, "interval": "10s"},
            "security": {"readonly": False, "enable_auth": False},
        }

    def prepare(self) -> None:
        (self.data_path / "db").mkdir(parents=True, exist_ok=True)
        self.provisioning_path.mkdir(parents=True, exist_ok=True)
        resources = self.provisioning_path / "00-streamrec.json"
        resources.write_text(json.dumps(self.resources(), indent=2) + "\n")
        # JSON is YAML too: no dumper needed.
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")

    def command(self) -> list[str]:
        return [
            str(self.binary_path),
            "--config",
            str(self.config_path),
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warning",
        ]

    # --- readiness -------------------------------------------------------------------
    def get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` of the API as JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        try:
            health = self.get("/api/v1/health", timeout=timeout)
        except (OSError, ValueError):
            return False
        # The body's keys tell Perses apart from any other HTTP server on the port.
        return isinstance(health, dict) and "version" in health and health.get("database") is True

    def dashboards(self) -> list[dict[str, Any]]:
        """The dashboards of the ``streamrec`` project, as the server lists them."""
        return self.get(f"/api/v1/projects/{PROJECT}/dashboards")

    def wait_ready(self, timeout: float) -> None:
        """Ready when the API answers and every shipped dashboard has been provisioned."""
        super().wait_ready(timeout)
        wanted = len(list(self.dashboards_path.glob("*.json")))
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.dashboards()) >= wanted:
                    return
            except (OSError, ValueError):
                pass  # the project itself is provisioned a moment after the server is up
            if time.monotonic() >= deadline:
                raise NotReadyError(self.name, timeout, self.log_path)
            time.sleep(0.25)
