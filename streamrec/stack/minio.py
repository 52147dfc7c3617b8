"""MinIO, a local S3-compatible object store, opt-in: ``up --service minio`` (or ``--all``).

Recent upstream releases are published as source, so the server is built from
source with ``go install`` (module proxy) into ``<cache>/bin/minio`` once, then reused.
It runs single-node single-drive on 127.0.0.1 with its data in ``<data>/minio``; ``up``
creates :attr:`Settings.minio.bucket` so ``s3://<bucket>/...`` storage URLs work at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from streamrec.stack.base import Service, port_open
from streamrec.stack.errors import InstallError, NotInstalledError, StackError

log = logging.getLogger(__name__)

MINIO_MODULE = "github.com/minio/minio"
# MinIO tags no semver module versions, so the pin is a pseudo-version (a 2026-02 commit).
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
_BUILD_HEARTBEAT_S = 30.0


def find_go() -> str | None:
    """The ``go`` command: on PATH, or in the tarball's default location."""
    found = shutil.which("go")
    if found:
        return found
    default = Path("/usr/local/go/bin/go")
    return str(default) if default.is_file() and os.access(default, os.X_OK) else None


class MinioService(Service):
    name = "minio"
    marker = "minio server"

    @property
    def port(self) -> int:
        return self.settings.minio.port

    def other_ports(self) -> dict[str, int]:
        return {"console": self.settings.minio.console_port}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- paths -----------------------------------------------------------------------
    @property
    def binary_path(self) -> Path:
        return self.settings.cache_path / "bin" / "minio"

    @property
    def version_path(self) -> Path:
        """Which MinIO version ``binary_path`` is, written after a complete build."""
        return self.binary_path.with_name("minio.version")

    @property
    def data_path(self) -> Path:
        return self.settings.data_path / "minio"

    @property
    def build_log_path(self) -> Path:
        return self.log_path.with_name("minio-build.log")

    # --- install ---------------------------------------------------------------------
    def installed(self) -> bool:
        try:
            stamp = self.version_path.read_text().strip()
        except OSError:
            return False
        return stamp == MINIO_VERSION and self.binary_path.is_file()

    def ensure_installed(self) -> None:
        if self.installed():
            return
        go = find_go()
        if go is None:
            raise NotInstalledError(
                "minio",
                "go",
                "install Go 1.24+ (https://go.dev/dl/); `stack up --service minio` then "
                f"builds MinIO once with `go install {MINIO_MODULE}@{MINIO_VERSION}`",
            )
        # A lock of its own (not the stack lock): callers may build before `up` so the
        # minutes of compiling don't block other `up`s; two builders must not share staging.
        lock_path = self.binary_path.with_name(".minio-build.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self.installed():  # another process may have built it meanwhile
                    self.build(go)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(self, go: str) -> None:
        """``go install`` the pinned MinIO into a staging dir, then move it into place.

        Takes minutes on a cold Go cache (see the README); logs a heartbeat meanwhile.
        """
        staging = self.binary_path.parent / ".minio-build"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.build_log_path.parent.mkdir(parents=True, exist_ok=True)
        go_cache = self.settings.cache_path / "go"
        env = {
            **os.environ,
            "GOBIN": str(staging),
            # CGO off: a static binary, no C toolchain needed (upstream builds it this way).
            "CGO_ENABLED": "0",
            # Module and build caches inside <cache>, so a rebuild (version bump) is warm
            # and deleting .cache/ removes every byte this build put on disk.
            "GOMODCACHE": str(go_cache / "mod"),
            "GOCACHE": str(go_cache / "build"),
            "GOFLAGS": "-modcacherw",  # the read-only default makes rm -rf .cache fail
        }
        cmd = [go, "install", "-v", f"{MINIO_MODULE}@{MINIO_VERSION}"]
        log.info(
            "minio: building MinIO %s with `go install` (one-time, several minutes on a cold "
            "Go cache); output in %s",
            MINIO_VERSION,
            self.build_log_path,
        )
        began = time.monotonic()
        with self.build_log_path.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
            try:
                returncode = self._wait_with_heartbeat(proc, began)
            except BaseException:  # Ctrl-C: no orphaned compiler left running
                proc.kill()
                proc.wait()
                raise
        if returncode != 0:
            raise InstallError("minio", cmd, self.build_log_path.read_text(errors="replace"))
        (staging / "minio").replace(self.binary_path)
        staging.rmdir()
        self.version_path.write_text(MINIO_VERSION + "\n")
        log.info("minio: built %s in %.0f s", self.binary_path, time.monotonic() - began)

    def _wait_with_heartbeat(self, proc: subprocess.Popen[bytes], began: float) -> int:
        next_beat = began + _BUILD_HEARTBEAT_S
        while (returncode := proc.poll()) is None:
            time.sleep(0.5)
            if time.monotonic() >= next_beat:
                next_beat += _BUILD_HEARTBEAT_S
                # `go install -v` prints one line per package it compiles.
                lines = self.build_log_path.read_bytes().count(b"\n")
                log.info(
                    "minio: still building (%d packages so far, %.0f s)",
                    lines,
                    time.monotonic() - began,
                )
        return returncode

    # --- config ----------------------------------------------------------------------
    def prepare(self) -> None:
        password = self.settings.minio.root_password.get_secret_value()
        if len(password) < 8:
            raise ConfigError("minio_root_password must have at least 8 characters (MinIO's rule)")
        self.data_path.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        # Credentials via the environment (readable by this user only), never via argv
        # (visible to every local user in ps).
        return {
            **os.environ,
            "MINIO_ROOT_USER": self.settings.minio.root_user,
            "MINIO_ROOT_PASSWORD": self.settings.minio.root_password.get_secret_value(),
            "MINIO_UPDATE": "off",  # no phoning home for updates
            "MINIO_PROMETHEUS_AUTH_TYPE": "public",  # our Prometheus scrapes without a token
        }

    def command(self) -> list[str]:
        return [
            str(self.binary_path),
            "server",
            "--address",
            f"127.0.0.1:{self.port}",
            "--console-address",
            f"127.0.0.1:{self.settings.minio.console_port}",
            str(self.data_path),
        ]

    # --- readiness -------------------------------------------------------------------
    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        try:
            url = f"{self.endpoint_url}/minio/health/live"
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                # The Server header tells MinIO apart from any other HTTP server on the port.
                return resp.status == 200 and resp.headers.get("Server", "").startswith("MinIO")
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        super().wait_ready(timeout)
        self.ensure_bucket()

    def client(self) -> Any:
        """A boto3 S3 client for this server with the root credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.settings.minio.root_user,
            aws_secret_access_key=self.settings.minio.root_password.get_secret_value(),
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2),
        )

    def ensure_bucket(self) -> bool:
        """Create :attr:`Settings.minio.bucket` if missing; True if this call created it."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.settings.minio.bucket
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
            raise StackError(
                f"cannot create bucket {bucket!r}: {code}: {err}",
                service=self.name,
                log_path=self.log_path,
            ) from None
        except BotoCoreError as err:
            raise StackError(
                f"cannot create bucket {bucket!r}: {err}", service=self.name, log_path=self.log_path
            ) from None
        log.info("minio: created bucket %s", bucket)
        return True
